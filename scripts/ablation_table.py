"""Snakemake entry point of rule ablation_table (logic: diffxai.jobs.ablation_table)."""

from diffxai.jobs import ablation_table
from diffxai.jobs.common import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
ablation_table.write_table(
    list(sm.input.points),
    sm.output.csv,
    sm.output.markdown,
    sm.params.title,
    list(sm.params.parameters),
    sm.params.grid,
)
