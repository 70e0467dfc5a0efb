"""Snakemake entry point of rule evaluate_ddpm (logic: diffxai.jobs.evaluate_ddpm)."""

from pathlib import Path

from diffxai.jobs import evaluate_ddpm
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
regressors = {
    key.removeprefix("regressor_"): str(Path(files[0]).parent)
    for key, files in sm.input.items()
    if key.startswith("regressor_")
}
# a Namedlist: `in` tests its values, keys() its names
encoder = str(Path(sm.input.encoder[0]).parent) if "encoder" in sm.input.keys() else None  # noqa: SIM118
evaluate_ddpm.run(
    sm.input.data,
    Path(sm.input.ddpm[0]).parent,
    encoder,
    regressors,
    sm.output.metrics,
    sm.output.samples,
    sm.params.evaluation,
    sm.params.seed,
    device,
)
