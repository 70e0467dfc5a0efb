"""Snakemake entry point of rule gcd_summary (logic: diffxai.jobs.gcd_summary)."""

from diffxai.jobs import gcd_summary
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
inputs = {
    "data": sm.input.data,
    "classifier_dir": model_dir(sm.input.classifier),
    "latents": sm.input.latents,
    "globality": sm.input.globality,
    "directions": list(sm.input.directions),
    "stores": list(sm.input.stores),
    "metrics": list(sm.input.metrics),
}
gcd_summary.run(
    inputs, sm.params.params, sm.params.labels, sm.output.metrics, sm.output.csv, sm.params.seed, device
)
