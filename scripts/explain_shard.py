"""Snakemake entry point of rule explain_shard (logic: diffxai.jobs.explain)."""

from diffxai.jobs import explain
from diffxai.jobs.common import setup_job
from diffxai.jobs.distill import time_context
from diffxai.jobs.gcd_directions import gcd_context
from diffxai.jobs.model_inputs import model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
spec = dict(sm.params.spec)
# a Namedlist: `in` tests its values, keys() its names
if "encoder" in sm.input.keys():  # noqa: SIM118
    spec["perceptual"] = {**spec["perceptual"], "encoder_dir": model_dir(sm.input.encoder)}
context = None
if "directions" in sm.input.keys():  # noqa: SIM118
    context = gcd_context(sm.input.directions, sm.input.latents, spec["lpips_weights"], device)
if "tokens" in sm.input.keys():  # noqa: SIM118
    context = time_context(model_dir(sm.input.tokens))
explain.run(
    sm.input.data,
    model_dir(sm.input.classifier),
    model_dir(sm.input.ddpm),
    sm.output[0],
    spec,
    int(sm.wildcards.shard),
    sm.params.seed,
    device,
    context,
)
