"""Snakemake entry point of rule hit_summary (logic: diffxai.jobs.hit_summary)."""

from diffxai.jobs import hit_summary
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, optional_model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
inputs = {
    "data": sm.input.data,
    "hit_dir": model_dir(sm.input.hit),
    "baseline_dir": optional_model_dir(sm.input.items(), "baseline"),
    "metrics": list(sm.input.metrics),
    "hit_attributions": list(sm.params.hit_attributions),
}
hit_summary.run(
    inputs, sm.params.settings, sm.params.labels, sm.output.summary, sm.output.table, sm.params.seed, device
)
