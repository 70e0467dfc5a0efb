"""Snakemake entry point of rule variance_sample (logic: diffxai.jobs.variance_sample)."""

from diffxai.jobs import variance_sample
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, optional_model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
inputs = {
    "data": sm.input.data,
    "ddpm_dir": model_dir(sm.input.ddpm),
    "regressor_dir": optional_model_dir(sm.input.items(), "regressor"),
}
variance_sample.run(inputs, sm.params.feature, sm.params.sampling, sm.output[0], sm.params.seed, device)
