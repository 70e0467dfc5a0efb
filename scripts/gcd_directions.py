"""Snakemake entry point of rule gcd_directions (logic: diffxai.jobs.gcd_directions)."""

from pathlib import Path

from diffxai.jobs import gcd_directions
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
gcd_directions.run(
    sm.input.data,
    Path(sm.input.classifier[0]).parent,
    Path(sm.input.ddpm[0]).parent,
    sm.input.latents,
    sm.output[0],
    sm.params.params,
    sm.params.lpips_weights,
    sm.params.seed,
    device,
)
