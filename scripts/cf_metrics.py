"""Snakemake entry point of rule cf_metrics (logic: diffxai.jobs.cf_metrics)."""

from pathlib import Path

from diffxai.jobs import cf_metrics
from diffxai.jobs.common import setup_job

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)


def model_dir(key):
    return str(Path(sm.input[key][0]).parent)


names = list(sm.input.keys())  # a Namedlist: keys() gives its names
regressors = {key.removeprefix("regressor_"): model_dir(key) for key in names if key.startswith("regressor_")}
inputs = cf_metrics.MetricInputs(
    sm.input.store,
    sm.input.data,
    model_dir("classifier"),
    model_dir("encoder"),
    model_dir("oracle") if "oracle" in names else None,
    regressors,
)
cf_metrics.run(
    inputs,
    dict(sm.params.settings),
    dict(sm.params.labels),
    sm.output.metrics,
    sm.output.csv,
    sm.params.seed,
    device,
)
