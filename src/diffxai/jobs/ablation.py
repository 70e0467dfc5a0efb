"""Job ``ablation_point``: one setting of an ablation of an explanation (seed 000 Table 4:
particles, t', β → flip rate, L2, FID; thesis Table 5.3: τ × w).

A point runs the explanation's method with the setting's parameters replaced on the first
``n_images`` test images and measures flip rate, mean L2 between input and CE over the
successful CEs, FID of the successful CEs against the inputs (the encoder's feature space)
and the mean NFE and classifier calls per CE (``jobs.ablation_table`` puts the points side by side).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from diffxai.config.ablation_design import setting_label
from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.explain import explained_samples, load_models
from diffxai.methods.registry import explainer, method_modules
from diffxai.metrics.counterfactual import distances
from diffxai.metrics.realism import FeatureSpace, fid
from diffxai.models.io import load_model
from diffxai.provenance import provenance
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.ablation"]


def run_point(
    data_path: str | Path,
    classifier_dir: str | Path,
    ddpm_dir: str | Path,
    encoder_dir: str | Path,
    out_path: str | Path,
    spec: dict[str, Any],
    setting: dict[str, Any],
    seed: int,
    device: torch.device,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Explain with ``spec['params']`` updated by ``setting`` ({parameter: value}; see
    :func:`config.ablation_design.ablation_settings`) and write the point's figures to
    ``out_path`` (JSON). ``context``: the method's extra inputs (TIME's tokens)."""
    started = time.perf_counter()
    data = PreparedData(data_path)
    ids = explained_samples(data, spec["n_images"])
    models = load_models(classifier_dir, ddpm_dir, spec.get("perceptual"), device)
    models.context = dict(context or {})
    params = {**spec["params"], **setting}
    x = to_m11(torch.from_numpy(data.rows("images", ids))).to(device)
    explaining = time.perf_counter()  # per CE: the explanation only, as the explain jobs time it
    result = explainer(spec["method"])(x, ids, models, params, seed, batch_size=spec["batch_size"])
    seconds = (time.perf_counter() - explaining) / len(ids)
    success = result.success
    x_cpu = x.cpu()
    cf = torch.from_numpy(result.counterfactuals)
    encoder, _ = load_model(encoder_dir)
    space = FeatureSpace.from_encoder(encoder.to(device).eval(), device)
    figures = {
        "setting": setting_label(setting),
        "n": len(ids),
        "n_successful": int(success.sum()),  # the CEs behind l2 and fid
        "flip_rate": float(success.mean()),
        "l2": float(distances(x_cpu[success], cf[success])["l2"].mean()) if success.any() else float("nan"),
        "fid": fid(space.features(x_cpu), space.features(cf[success])) if success.sum() > 1 else float("nan"),
        "nfe": float(result.nfe.mean()),
        "classifier_calls": float(result.classifier_calls.mean()),
        "seconds_per_ce": seconds,
    }
    modules = [*MODULES, *method_modules(spec["method"])]
    record = provenance({**spec, "params": params}, modules, seed, str(device), time.perf_counter() - started)
    write_json(out_path, {**figures, "params": params, "provenance": record})
    log.info("ablation point %s: %s", setting, figures)
    return figures
