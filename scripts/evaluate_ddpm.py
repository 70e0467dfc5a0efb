"""Snakemake entry point of rule evaluate_ddpm (logic: diffxai.jobs.evaluate_ddpm)."""

from diffxai.jobs import evaluate_ddpm
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, optional_model_dir, regressor_dirs

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
encoder = optional_model_dir(sm.input.items(), "encoder")
evaluate_ddpm.run(
    sm.input.data,
    model_dir(sm.input.ddpm),
    encoder,
    regressor_dirs(sm.input.items()),
    sm.output.metrics,
    sm.output.samples,
    sm.params.evaluation,
    sm.params.seed,
    device,
)
