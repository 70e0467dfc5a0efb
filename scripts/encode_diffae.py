"""Snakemake entry point of rule encode_diffae (logic: diffxai.jobs.encode_diffae)."""

from diffxai.jobs import encode_diffae
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
encode_diffae.run(
    sm.input.data,
    model_dir(sm.input.diffae),
    sm.output.latents,
    sm.output.metrics,
    sm.params.latents,
    sm.params.lpips_weights,
    sm.params.seed,
    device,
)
