"""Snakemake entry point of rule ablation_point (logic: diffxai.jobs.ablation)."""

from pathlib import Path

from diffxai.jobs import ablation
from diffxai.jobs.common import setup_job
from diffxai.jobs.distill import time_context

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)


def model_dir(key):
    return Path(sm.input[key][0]).parent


spec = dict(sm.params.spec)
if "encoder" in sm.input.keys():  # noqa: SIM118 - a Namedlist: keys() gives its names
    spec["perceptual"] = {**spec["perceptual"], "encoder_dir": str(model_dir("encoder"))}
context = time_context(model_dir("tokens")) if "tokens" in sm.input.keys() else None  # noqa: SIM118
ablation.run_point(
    sm.input.data,
    model_dir("classifier"),
    model_dir("ddpm"),
    model_dir("metric_encoder"),
    sm.output[0],
    spec,
    dict(sm.params.setting),
    sm.params.seed,
    device,
    context,
)
