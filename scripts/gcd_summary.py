"""Snakemake entry point of rule gcd_summary (logic: diffxai.jobs.gcd_summary)."""

from diffxai.jobs import gcd_summary
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, regressor_dirs

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
inputs = {
    "data": sm.input.data,
    "classifier_dir": model_dir(sm.input.classifier),
    "diffae_dir": model_dir(sm.input.diffae),
    "latents": sm.input.latents,
    "directions": list(sm.input.directions),
    "stores": list(sm.input.stores),
    "metrics": list(sm.input.metrics),
    "regressors": regressor_dirs(sm.input.items()),
}
gcd_summary.run(
    inputs,
    sm.params.params,
    sm.params.settings,
    sm.params.labels,
    sm.output.metrics,
    sm.output.csv,
    sm.params.seed,
    device,
)
