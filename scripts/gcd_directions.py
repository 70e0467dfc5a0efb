"""Snakemake entry point of rule gcd_directions (logic: diffxai.jobs.gcd_directions)."""

from diffxai.jobs import gcd_directions
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
gcd_directions.run(
    sm.input.data,
    model_dir(sm.input.classifier),
    model_dir(sm.input.diffae),
    sm.input.latents,
    sm.output[0],
    sm.params.params,
    sm.params.lpips_weights,
    sm.params.seed,
    device,
    sm.params.earlier_seeds,
)
