"""Snakemake entry point of rule cf_metrics (logic: diffxai.jobs.cf_metrics)."""

from diffxai.jobs import cf_metrics
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, regressor_dirs

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
names = list(sm.input.keys())  # a Namedlist: keys() gives its names
inputs = cf_metrics.MetricInputs(
    sm.input.store,
    sm.input.data,
    model_dir(sm.input.classifier),
    model_dir(sm.input.encoder),
    model_dir(sm.input.oracle) if "oracle" in names else None,
    regressor_dirs(sm.input.items()),
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
