"""Snakemake entry point of rule gcd_globality (logic: diffxai.jobs.gcd_globality)."""

from diffxai.jobs import gcd_globality
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, regressor_dirs

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
inputs = {
    "data": sm.input.data,
    "classifier_dir": model_dir(sm.input.classifier),
    "diffae_dir": model_dir(sm.input.diffae),
    "latents": sm.input.latents,
    "directions": sm.input.directions,
    "regressors": regressor_dirs(sm.input.items()),
}
gcd_globality.run(inputs, sm.params.params, sm.params.settings, sm.output[0], sm.params.seed, device)
