"""Snakemake entry point of rule diversity (logic: diffxai.jobs.diversity)."""

from diffxai.jobs import diversity
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
diversity.run(
    list(sm.input.runs),
    sm.params.lpips_weights,
    dict(sm.params.labels),
    sm.output.metrics,
    sm.output.csv,
    device,
)
