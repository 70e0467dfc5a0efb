"""Snakemake entry point of rule aggregate (logic: diffxai.jobs.aggregate)."""

from diffxai.jobs import aggregate
from diffxai.jobs.common import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
outputs = (sm.output.metrics, sm.output.tables, sm.output.markdown)
aggregate.run(list(sm.params.entries), dict(sm.params.label_factors), *outputs)
