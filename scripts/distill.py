"""Snakemake entry point of rule distill (logic: diffxai.jobs.distill)."""

from pathlib import Path

from diffxai.jobs import distill
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
distill.run(
    sm.input.data,
    model_dir(sm.input.t2i),
    model_dir(sm.input.classifier),
    Path(sm.output.tokens).parent,
    sm.params.settings,
    sm.params.seed,
    device,
)
