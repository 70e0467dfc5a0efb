"""Snakemake entry point of rule train_ddpm (logic: diffxai.jobs.train_ddpm)."""

from pathlib import Path

from diffxai.jobs import train_ddpm
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
train_ddpm.run(
    sm.input.data,
    Path(sm.output.weights).parent,
    sm.params.cache,
    sm.wildcards.name,
    sm.wildcards.dataset,
    sm.params.cfg,
    sm.params.seed,
    device,
)
