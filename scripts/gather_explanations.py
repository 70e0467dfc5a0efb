"""Snakemake entry point of rule gather_explanations (logic: diffxai.jobs.gather_explanations)."""

from diffxai.jobs import gather_explanations
from diffxai.jobs.common import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
gather_explanations.run(list(sm.input.shards), sm.output[0], dict(sm.params.info))
