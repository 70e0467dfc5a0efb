"""Snakemake entry point of rule train_encoder (logic: diffxai.jobs.train_encoder)."""

from pathlib import Path

from diffxai.jobs import train_encoder
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
train_encoder.run(
    sm.input.data,
    Path(sm.output.weights).parent,
    sm.wildcards.name,
    sm.wildcards.dataset,
    sm.params.cfg,
    sm.params.seed,
    device,
)
