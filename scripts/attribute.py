"""Snakemake entry point of rule attribute (logic: diffxai.jobs.attribute)."""

from pathlib import Path

from diffxai.jobs import attribute
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
# a Namedlist: keys() gives its names
ddpm = Path(sm.input.ddpm[0]).parent if "ddpm" in sm.input.keys() else None  # noqa: SIM118
attribute.run(
    sm.input.data,
    Path(sm.input.classifier[0]).parent,
    ddpm,
    sm.output[0],
    dict(sm.params.spec),
    sm.params.seed,
    device,
)
