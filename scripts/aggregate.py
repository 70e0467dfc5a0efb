"""Snakemake entry point of rule aggregate (logic: diffxai.jobs.aggregate)."""

from diffxai.jobs import aggregate
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
setup_job(sm.log[0], sm.threads, "cpu")
aggregate.run(list(sm.params.entries), sm.output.metrics, sm.output.tables, sm.output.markdown)
