"""Snakemake entry point of rule ablation_point (logic: diffxai.jobs.ablation)."""

from diffxai.jobs import ablation
from diffxai.jobs.common import setup_job
from diffxai.jobs.distill import time_context
from diffxai.jobs.model_inputs import model_dir, optional_model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
spec = dict(sm.params.spec)
encoder = optional_model_dir(sm.input.items(), "encoder")
if encoder:
    spec["perceptual"] = {**spec["perceptual"], "encoder_dir": encoder}
tokens = optional_model_dir(sm.input.items(), "tokens")
context = time_context(tokens) if tokens else None
ablation.run_point(
    sm.input.data,
    model_dir(sm.input.classifier),
    model_dir(sm.input.ddpm),
    model_dir(sm.input.metric_encoder),
    sm.output[0],
    spec,
    dict(sm.params.setting),
    sm.params.seed,
    device,
    context,
)
