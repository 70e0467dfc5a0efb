"""Snakemake entry point of rule explain_shard (logic: diffxai.jobs.explain)."""

from pathlib import Path

from diffxai.jobs import explain
from diffxai.jobs.common import setup_job
from diffxai.jobs.distill import time_context
from diffxai.jobs.gcd_directions import gcd_context

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
spec = dict(sm.params.spec)
# a Namedlist: `in` tests its values, keys() its names
if "encoder" in sm.input.keys():  # noqa: SIM118
    spec["perceptual"] = {**spec["perceptual"], "encoder_dir": str(Path(sm.input.encoder[0]).parent)}
context = None
if "directions" in sm.input.keys():  # noqa: SIM118
    context = gcd_context(sm.input.directions, sm.input.latents, spec["lpips_weights"], device)
if "tokens" in sm.input.keys():  # noqa: SIM118
    context = time_context(Path(sm.input.tokens[0]).parent)
explain.run(
    sm.input.data,
    Path(sm.input.classifier[0]).parent,
    Path(sm.input.ddpm[0]).parent,
    sm.output[0],
    spec,
    int(sm.wildcards.shard),
    sm.params.seed,
    device,
    context,
)
