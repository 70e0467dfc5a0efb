"""Snakemake entry point of rule variance_scores (logic: diffxai.jobs.variance_scores)."""

from diffxai.jobs import variance_scores
from diffxai.jobs.common import setup_job
from diffxai.jobs.model_inputs import model_dir, optional_model_dir

sm = snakemake  # noqa: F821
device = setup_job(sm.log[0], sm.threads, sm.params.device)
features = sm.params.features
inputs = {
    "data": sm.input.data,
    "classifier_dir": model_dir(sm.input.classifier),
    "samples": {
        name: getattr(sm.input, f"samples_{name}")
        for name in features
        if hasattr(sm.input, f"samples_{name}")
    },
    "plain": sm.input.plain if hasattr(sm.input, "plain") else None,
    "encoder_dir": optional_model_dir(sm.input.items(), "encoder"),
    "regressor_dirs": {
        name: model_dir(getattr(sm.input, f"regressor_{name}"))
        for name in features
        if hasattr(sm.input, f"regressor_{name}")
    },
}
outputs = {
    key: getattr(sm.output, key)
    for key in ("scores", "table", "local_scores", "constraint", "samples", "predictions")
}
variance_scores.run(inputs, features, sm.params.settings, sm.params.labels, outputs, sm.params.seed, device)
