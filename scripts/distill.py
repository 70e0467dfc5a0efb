"""Snakemake entry point of rule distill (logic: diffxai.jobs.distill)."""

from pathlib import Path

from diffxai.jobs import distill
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
distill.run(
    sm.input.data,
    Path(sm.input.t2i[0]).parent,
    Path(sm.input.classifier[0]).parent,
    Path(sm.output.tokens).parent,
    sm.params.settings,
    sm.params.seed,
    device,
)
