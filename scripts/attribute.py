"""Snakemake entry point of rule attribute (logic: diffxai.jobs.attribute)."""

from diffxai.jobs import attribute
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, optional_model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
ddpm = optional_model_dir(sm.input.items(), "ddpm")
attribute.run(
    sm.input.data,
    model_dir(sm.input.classifier),
    ddpm,
    sm.output[0],
    dict(sm.params.spec),
    sm.params.seed,
    device,
)
