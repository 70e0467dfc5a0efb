"""Snakemake entry point of rule attribution_metrics (logic: diffxai.jobs.attribution_metrics)."""

from diffxai.jobs import attribution_metrics
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, optional_model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
ddpm = optional_model_dir(sm.input.items(), "ddpm")
attribution_metrics.run(
    sm.input.store,
    sm.input.data,
    model_dir(sm.input.classifier),
    ddpm,
    dict(sm.params.settings),
    dict(sm.params.labels),
    sm.output.metrics,
    sm.output.csv,
    sm.params.seed,
    device,
)
