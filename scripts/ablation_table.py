"""Snakemake entry point of rule ablation_table (logic: diffxai.jobs.ablation)."""

from diffxai.jobs import ablation
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
setup_job(sm.log[0], sm.threads, "cpu")
ablation.write_table(list(sm.input.points), sm.output.csv, sm.output.markdown, sm.params.title)
