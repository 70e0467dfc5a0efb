"""Snakemake entry point of rule aggregate (logic: diffxai.jobs.aggregate)."""

from diffxai.jobs import aggregate
from diffxai.jobs.common import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
aggregate.run(list(sm.params.entries), sm.output.metrics, sm.output.tables, sm.output.markdown)
