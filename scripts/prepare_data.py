"""Snakemake entry point of rule prepare_data (logic: diffxai.jobs.prepare_data)."""

from diffxai.jobs import prepare_data
from diffxai.jobs.common import setup_logging

setup_logging(snakemake.log[0], snakemake.threads)  # noqa: F821
prepare_data.run(snakemake.output[0], snakemake.params.cfg)  # noqa: F821
