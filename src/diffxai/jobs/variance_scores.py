"""Job ``variance_scores``: the variance-based importance of every feature of an analysis (seed 002).

Per feature, Y is the classifier's output on samples of p(X | V = v):

- ``discrete``: a binary attribute of the test images (the groups are the test images with each
  value; every image weighs 1/N), with the CaCE baseline (App. A, Table 5);
- ``continuous`` / ``region``: the accepted constrained samples of ``variance_sample`` (the
  groups are the drawn values, each weighing the same), with the linear-regression R² of the
  classifier's logit margin on g(x) over the test split for continuous features (App. F).

Scores (global, local per value) with Y = one-hot predicted class (the headline), Y = class
probabilities, and the class-balanced variant (each true class of the value's source image
weighs the same, §4.2.2); the stratified bootstrap variance of the class scores (Table 4); the
coverage (Naeem et al., k nearest neighbours) of the samples against the test set next to as many
plain DDPM samples, in the self-supervised encoder's space (Table 3).

Outputs: ``scores.json``, ``table.md``, ``predictions.zarr`` (the classifier's outputs), and
figures ``local_scores.png`` (Fig. 5), ``constraint.png`` (Fig. 10) and ``samples.png`` (Fig. 3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.markdown import table_lines
from diffxai.jobs.variance_sample import STORE_KIND
from diffxai.methods import variance_score as vs
from diffxai.models.batched import batched_outputs
from diffxai.models.io import load_model
from diffxai.provenance import provenance
from diffxai.store import StoreWriter, open_store
from diffxai.training.simsiam import encode
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.variance_scores", "diffxai.methods.variance_score"]
PREDICTIONS_KIND = "variance_predictions"


@torch.no_grad()
def classifier_logits(
    classifier: torch.nn.Module, images_uint8: np.ndarray, device: torch.device
) -> np.ndarray:
    """Logits (N, K) float64 of uint8 images (N, C, H, W), in batches of 500."""
    chunks = [
        classifier(to_m11(torch.from_numpy(images_uint8[start : start + 500])).to(device)).cpu()
        for start in range(0, len(images_uint8), 500)
    ]
    return torch.cat(chunks).double().numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _or_undefined(compute: Callable[[], dict[str, Any]], keep: tuple[str, ...]) -> dict[str, Any]:
    """The ``keep`` entries of a score computation, or, when the classifier is constant over the
    samples (Var(Y) = 0), None for each with the reason."""
    try:
        result = compute()
    except vs.UndefinedScore as reason:
        return {**dict.fromkeys(keep), "undefined": str(reason)}
    return {key: result[key] for key in keep}


SCORE_KEYS = ("global_score", "explained_variance", "unexplained_variance", "total_variance", "local_scores")
BOOTSTRAP_KEYS = ("global_variance", "local_variance", "mean_local_variance", "global_ci95", "n_resamples")


def score_variants(
    probabilities: np.ndarray, groups: np.ndarray, weights: np.ndarray, classes: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Scores with Y = predicted class, Y = probabilities, and class-balanced (Y = class)."""
    y_class = vs.prediction_targets(probabilities, "class")
    y_probability = vs.prediction_targets(probabilities, "probability")
    balanced = vs.balanced_weights(classes, weights)
    return {
        "class": _or_undefined(lambda: vs.variance_scores(y_class, groups, weights), SCORE_KEYS),
        "probability": _or_undefined(lambda: vs.variance_scores(y_probability, groups, weights), SCORE_KEYS),
        "class_balanced": _or_undefined(lambda: vs.variance_scores(y_class, groups, balanced), SCORE_KEYS),
    }


def bootstrap(
    probabilities: np.ndarray,
    groups: np.ndarray,
    weights: np.ndarray,
    n_resamples: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Stratified bootstrap variances of the class scores (Table 4)."""
    y_class = vs.prediction_targets(probabilities, "class")
    return _or_undefined(
        lambda: vs.bootstrap_scores(y_class, groups, weights, n_resamples, rng), BOOTSTRAP_KEYS
    )


def group_counts(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted group ids and their sample counts."""
    return np.unique(groups, return_counts=True)


def discrete_feature(
    feature: dict[str, Any],
    data: PreparedData,
    test: np.ndarray,
    logits: np.ndarray,
    settings: dict[str, Any],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Scores of a binary attribute straight from the test images, with CaCE and the bootstrap."""
    column = data.attribute_names.index(feature["attribute"])
    values = data.array("attributes")[test, column].astype(np.int64)
    probabilities = softmax(logits)
    weights = np.full(len(test), 1.0 / len(test))
    present, counts = group_counts(values)
    record = {
        "values": present.tolist(),
        "counts": counts.tolist(),
        "scores": score_variants(probabilities, values, weights, data.array("labels")[test]),
        "bootstrap": bootstrap(probabilities, values, weights, settings["bootstrap"], rng),
        # CaCE needs both values of the attribute among the test images
        "cace": {
            class_index: vs.cace(probabilities[:, class_index], values) if len(present) == 2 else None
            for class_index in range(probabilities.shape[1])
        },
    }
    return record


@dataclass
class SampledPredictions:
    """The accepted samples of one feature: rows in samples.zarr (M,), images uint8 (M, C, H, W),
    their value index (M,) and the classifier's probabilities (M, K)."""

    rows: np.ndarray
    images: np.ndarray
    value_index: np.ndarray
    probabilities: np.ndarray


def sampled_feature(
    feature: dict[str, Any],
    store_path: str | Path,
    classifier: torch.nn.Module,
    device: torch.device,
    settings: dict[str, Any],
    rng: np.random.Generator,
) -> tuple[dict[str, Any], SampledPredictions]:
    """Scores over the accepted samples of one feature, and those samples with their predictions."""
    store = open_store(store_path, kind=STORE_KIND)
    accepted, dropped = scored_samples(store.read("accepted").astype(bool), store.read("value_index"),
                                       settings["min_accepted"])  # fmt: skip
    if not accepted.any():
        return rejected_feature(
            store_path, store.attrs["summary"], store.read("value_index"), store.read("images", slice(0, 0)),
            settings["min_accepted"], dropped,
        )  # fmt: skip
    images = store.read("images")[accepted]
    groups = store.read("value_index")[accepted].astype(np.int64)
    probabilities = softmax(classifier_logits(classifier, images, device))
    weights = vs.value_weights(groups)
    present, counts = group_counts(groups)
    target, drawn = store.read("target"), store.read("value_index")
    first = np.searchsorted(drawn, present)  # the store holds the samples of each value together
    record = {
        "sampling": store.attrs["summary"],
        "values_drawn": int(drawn.max()) + 1,
        "values_with_samples": len(present),
        "values_dropped": dropped,  # with 1 .. min_accepted − 1 accepted samples
        "accepted_per_value": counts.tolist(),
        "values": target[first].tolist() if feature["kind"] == "continuous" else present.tolist(),
        "source_index": store.read("source_index")[first].tolist(),
        "scores": score_variants(probabilities, groups, weights, store.read("source_label")[accepted]),
        "bootstrap": bootstrap(probabilities, groups, weights, settings["bootstrap"], rng),
    }
    return record, SampledPredictions(np.flatnonzero(accepted), images, groups, probabilities)


def scored_samples(
    accepted: np.ndarray, value_index: np.ndarray, min_accepted: int
) -> tuple[np.ndarray, int]:
    """The accepted samples (N,) bool of the values with at least ``min_accepted`` of them, and how
    many values that drops. A value's within-variance from n samples is (n − 1)/n of the true one
    (0 for one sample: local score 1), so values of very few samples would inflate the scores."""
    counts = np.bincount(value_index[accepted], minlength=int(value_index.max()) + 1)
    kept = counts >= min_accepted
    return accepted & kept[value_index], int(((counts > 0) & ~kept).sum())


def rejected_feature(
    store_path: str | Path,
    sampling: dict[str, Any],
    drawn: np.ndarray,
    no_images: np.ndarray,
    min_accepted: int,
    dropped: int,
) -> tuple[dict[str, Any], SampledPredictions]:
    """The record of a feature no value of which has ``min_accepted`` samples within the rejection
    tolerance: every score is undefined (the reason says so, and the acceptance rate shows in the
    table). ``no_images``: (0, C, H, W), the store's image array read with no rows."""
    reason = (
        f"no value of {store_path} has {min_accepted} samples within the rejection tolerance of its "
        "target (min_accepted): the constraint failed (more steps or a larger rho make the guidance "
        "stronger; more samples_per_value give more accepted ones)"
    )
    log.warning(reason)
    undefined = {**dict.fromkeys(SCORE_KEYS), "undefined": reason}
    record = {
        "sampling": sampling,
        "values_drawn": int(drawn.max()) + 1,
        "values_with_samples": 0,
        "values_dropped": dropped,
        "accepted_per_value": [],
        "values": [],
        "source_index": [],
        "scores": {variant: dict(undefined) for variant in ("class", "probability", "class_balanced")},
        "bootstrap": {**dict.fromkeys(BOOTSTRAP_KEYS), "undefined": reason},
    }
    empty = np.zeros(0, np.int64)
    return record, SampledPredictions(empty, no_images, empty, np.zeros((0, 0), np.float32))


def coverage_table(
    real: np.ndarray, samples: np.ndarray, plain: np.ndarray, ks: list[int], rng: np.random.Generator
) -> dict[str, Any]:
    """Coverage (Naeem et al.) of the samples' features and of as many plain samples, per k."""
    plain = plain[rng.choice(len(plain), size=min(len(samples), len(plain)), replace=False)]
    return {
        "n_real": len(real),
        "n_samples": len(samples),
        "n_plain": len(plain),
        "samples": {k: vs.coverage(real, samples, k) for k in ks},
        "plain": {k: vs.coverage(real, plain, k) for k in ks},
    }


def run(
    inputs: dict[str, Any],
    features: dict[str, dict[str, Any]],
    settings: dict[str, Any],
    labels: dict[str, str],
    outputs: dict[str, str | Path],
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Write scores.json, table.md and the figures.

    ``inputs``: data, classifier_dir, samples ({feature: samples.zarr} of continuous and region
    features), plain (samples.zarr or None), encoder_dir (or None: no coverage), regressor_dirs
    ({feature: dir} of continuous features). ``settings``: bootstrap, coverage_k, min_accepted.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    data = PreparedData(inputs["data"])
    classifier, _ = load_model(inputs["classifier_dir"])
    classifier = classifier.to(device)
    test = data.indices("test")
    test_images = data.rows("images", test)
    test_logits = classifier_logits(classifier, test_images, device)
    encoder = None
    if inputs["encoder_dir"] is not None:
        encoder = load_model(inputs["encoder_dir"])[0].to(device)
        real_features = encode(encoder, to_m11(torch.from_numpy(test_images)), device).numpy()
        plain_features = None
        if inputs["plain"] is not None:
            plain_images = open_store(inputs["plain"], STORE_KIND).read("images")
            plain_features = encode(encoder, to_m11(torch.from_numpy(plain_images)), device).numpy()
    results: dict[str, Any] = {}
    sampled: dict[str, SampledPredictions] = {}
    test_values: dict[str, np.ndarray] = {}
    for name, feature in features.items():
        if feature["kind"] == "discrete":
            results[name] = discrete_feature(feature, data, test, test_logits, settings, rng)
        else:
            results[name], sampled[name] = sampled_feature(
                feature, inputs["samples"][name], classifier, device, settings, rng
            )
            if encoder is not None and plain_features is not None and len(sampled[name].images):
                features_of_samples = encode(encoder, to_m11(torch.from_numpy(sampled[name].images)), device)
                results[name]["coverage"] = coverage_table(
                    real_features, features_of_samples.numpy(), plain_features, settings["coverage_k"], rng
                )
        if feature["kind"] == "continuous":
            regressor = load_model(inputs["regressor_dirs"][name])[0].to(device)
            test_m11 = to_m11(torch.from_numpy(test_images))
            test_values[name] = batched_outputs(regressor, test_m11, device).numpy()
            results[name]["linear_r2"] = vs.linear_r2(test_values[name], test_logits)
        results[name]["kind"] = feature["kind"]
    summary = {
        **labels,
        "n_test": len(test),
        "classifier_test_accuracy": float((test_logits.argmax(axis=1) == data.array("labels")[test]).mean()),
        "features": results,
    }
    summary["provenance"] = provenance(
        {"features": features, "settings": settings},
        MODULES,
        seed,
        str(device),
        time.perf_counter() - started,
    )
    write_json(outputs["scores"], summary)
    Path(outputs["table"]).write_text(markdown_table(summary, settings["coverage_k"]))
    plot_local_scores(
        results, test_values, data.array("labels")[test], data.class_names, outputs["local_scores"]
    )
    plot_constraint(results, inputs["samples"], features, outputs["constraint"])
    save_sample_grid({name: entry.images for name, entry in sampled.items()}, results, outputs["samples"])
    write_predictions(outputs["predictions"], test, softmax(test_logits), sampled, summary["provenance"])
    log.info("global scores: %s", {name: r["scores"]["class"]["global_score"] for name, r in results.items()})
    return summary


def write_predictions(
    path: str | Path,
    test: np.ndarray,
    test_probabilities: np.ndarray,
    sampled: dict[str, SampledPredictions],
    record: dict[str, Any],
) -> None:
    """``predictions.zarr`` (kind ``variance_predictions``): the classifier's probabilities of the
    test images (``test_index``, ``test_probabilities``) and, per sampled feature, of its accepted
    samples (``<feature>_rows`` into its samples.zarr, ``<feature>_value_index``,
    ``<feature>_probabilities``)."""
    with StoreWriter(path, PREDICTIONS_KIND, {}, attrs={"provenance": record}) as writer:
        writer.put("test_index", test)
        writer.put("test_probabilities", test_probabilities.astype(np.float32))
        for name, entry in sampled.items():
            writer.put(f"{name}_rows", entry.rows)
            writer.put(f"{name}_value_index", entry.value_index)
            writer.put(f"{name}_probabilities", entry.probabilities.astype(np.float32))
        writer.finalize()


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.2e}" if value != 0 and abs(value) < 10**-digits else f"{value:.{digits}f}"


def _range(values: np.ndarray | None) -> str:
    return "–" if values is None else f"{_fmt(float(np.min(values)))} / {_fmt(float(np.max(values)))}"


def markdown_table(summary: dict[str, Any], ks: list[int]) -> str:
    """Rows = features; scores (↑ = more important), bootstrap variances, baselines, constraint quality."""
    header = [
        "feature",
        "kind",
        "global (class)",
        "global (prob.)",
        "global (balanced)",
        "local min / max",
        "boot. var local",
        "boot. var global",
        "CaCE (class 1)",
        "linear R²",
        "median |err|/std",
        "acceptance",
        *[f"coverage k={k} (samples / plain)" for k in ks],
    ]
    title = f"Variance-based feature importance: {summary['classifier']} on {summary['dataset']}"
    rows = []
    for name, result in summary["features"].items():
        scores = result["scores"]
        sampling = result.get("sampling", {})
        coverage = result.get("coverage")
        cace = result.get("cace", {}).get(1)
        cells = [
            name,
            result["kind"],
            _fmt(scores["class"]["global_score"]),
            _fmt(scores["probability"]["global_score"]),
            _fmt(scores["class_balanced"]["global_score"]),
            _range(scores["class"]["local_scores"]),
            _fmt(result["bootstrap"]["mean_local_variance"]),
            _fmt(result["bootstrap"]["global_variance"]),
            _fmt(cace),
            _fmt(result.get("linear_r2", {}).get("r2")),
            _fmt(sampling.get("median_abs_error_std")),
            _fmt(sampling.get("acceptance_rate")),
            *[
                f"{_fmt(coverage['samples'][k])} / {_fmt(coverage['plain'][k])}" if coverage else "–"
                for k in ks
            ],
        ]
        rows.append(cells)
    return "\n".join([f"# {title}", "", *table_lines(header, rows)]) + "\n"


def _save(figure: plt.Figure, axes: np.ndarray, drawn: bool, path: str | Path) -> None:
    """Save and close a figure of continuous-feature panels (a note when there is none)."""
    if not drawn:
        axes[0, 0].text(0.5, 0.5, "no continuous feature", ha="center")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_local_scores(
    results: dict[str, Any],
    test_values: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: list[str],
    path: str | Path,
) -> None:
    """Fig. 5: local score (Y = class) against the value of each continuous feature, above the
    test distribution of that feature per true class."""
    names = list(test_values)
    figure, axes = plt.subplots(2, max(len(names), 1), figsize=(4.5 * max(len(names), 1), 6), squeeze=False)
    for column, name in enumerate(names):
        scores = results[name]["scores"]["class"]
        top, bottom = axes[0, column], axes[1, column]
        if scores["local_scores"] is None:
            top.text(0.5, 0.5, "undefined: the classifier is constant", ha="center")
        else:
            values, local = np.asarray(results[name]["values"]), np.asarray(scores["local_scores"])
            order = np.argsort(values)
            top.plot(values[order], local[order], "o-", markersize=3)
            top.axhline(scores["global_score"], color="grey", linestyle="--", label="global")
            top.set(ylim=(min(-0.05, local.min() - 0.05), 1.05))
            top.legend()
        top.set(title=name, ylabel="local score")
        for index, class_name in enumerate(class_names):
            bottom.hist(test_values[name][labels == index], bins=40, alpha=0.6, label=class_name)
        bottom.set(xlabel=f"{name} (regressor units)", ylabel="test images")
        bottom.legend()
    _save(figure, axes, bool(names), path)


def plot_constraint(
    results: dict[str, Any],
    stores: dict[str, str | Path],
    features: dict[str, dict[str, Any]],
    path: str | Path,
) -> None:
    """Fig. 10: measured against target value of every constrained sample, before rejection."""
    names = [name for name, feature in features.items() if feature["kind"] == "continuous"]
    figure, axes = plt.subplots(1, max(len(names), 1), figsize=(4.5 * max(len(names), 1), 4), squeeze=False)
    for column, name in enumerate(names):
        store = open_store(stores[name], kind=STORE_KIND)
        target, measured = store.read("target"), store.read("measured")
        axis = axes[0, column]
        axis.scatter(target, measured, s=2, alpha=0.3)
        low, high = float(target.min()), float(target.max())
        axis.plot([low, high], [low, high], color="black", linewidth=1)
        sampling = results[name]["sampling"]
        axis.set(
            title=f"{name}: median |err| {sampling['median_abs_error_std']:.2f} std, "
            f"accepted {sampling['acceptance_rate']:.0%}",
            xlabel="target",
            ylabel="measured",
        )
    _save(figure, axes, bool(names), path)


def save_sample_grid(
    sample_images: dict[str, np.ndarray],
    results: dict[str, Any],
    path: str | Path,
    rows: int = 4,
    columns: int = 8,
) -> None:
    """Fig. 3: per sampled feature, ``rows`` values × ``columns`` accepted samples (one value per row)."""
    blocks = []
    for name, images in sample_images.items():
        groups = np.repeat(
            np.arange(len(results[name]["accepted_per_value"])), results[name]["accepted_per_value"]
        )
        for group in range(min(rows, groups.max(initial=-1) + 1)):
            chosen = images[groups == group][:columns]
            row = np.zeros((columns, *images.shape[1:]), np.uint8)
            row[: len(chosen)] = chosen
            blocks.append(np.concatenate(list(row), axis=2))
    if not blocks:
        Image.new("L", (8, 8)).save(path)
        return
    canvas = np.concatenate(blocks, axis=1).transpose(1, 2, 0)
    Image.fromarray(canvas.squeeze(-1) if canvas.shape[-1] == 1 else canvas).save(path)
