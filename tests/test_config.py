"""The workflow config: shipped configs validate, defaults are filled, bad values are named."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from diffxai.config.load import ConfigError, load_config, validate_config
from diffxai.data.kinds import resolve_flips

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())


def mutated(mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """A deep copy of the default config changed by ``mutate``."""
    config = copy.deepcopy(DEFAULT)
    mutate(config)
    return config


def validated(mutate: Callable[[dict[str, Any]], Any] = lambda c: None) -> dict[str, Any]:
    return validate_config(mutated(mutate), REPO)


# ---------------------------------------------------------------- shipped configs


def test_default_config_validates():
    config = load_config([REPO / "config.yaml"], base_dir=REPO)
    assert set(config["datasets"]) == {"ellipses", "attributes"}


def test_default_config_with_tiny_preset_validates():
    config = load_config([REPO / "config.yaml", REPO / "presets" / "tiny.yaml"], base_dir=REPO)
    assert config["datasets"]["ellipses"]["image_size"] == 16
    assert config["datasets"]["ellipses"]["kind"] == "ellipses"  # kept from config.yaml


def test_default_config_with_tiny_and_quick_presets_validates():
    paths = [REPO / "config.yaml", REPO / "presets" / "tiny.yaml", REPO / "presets" / "quick.yaml"]
    config = load_config(paths, base_dir=REPO)
    assert config["results"] == "results/quick"
    assert {entry["shards"] for entry in config["explanations"].values()} == {1}


def test_default_config_with_paper_preset_validates():
    config = load_config([REPO / "config.yaml", REPO / "presets" / "paper.yaml"], base_dir=REPO)
    assert config["models"]["ddpm"]["datasets"] == ["ellipses", "attributes"]


# ---------------------------------------------------------------- defaults


def test_model_without_arch_gets_simple_cnn():
    config = validated(lambda c: c["models"]["classifier"].pop("arch"))
    assert config["models"]["classifier"]["arch"] == "simple_cnn"


def test_model_without_train_section_gets_every_training_default():
    config = validated(lambda c: c["models"]["classifier"].pop("train"))
    train = config["models"]["classifier"]["train"]
    assert train["patience"] == 4
    assert train["max_epochs"] == 30


def test_partial_train_section_is_completed_with_defaults():
    config = validated(lambda c: c["models"]["classifier"].__setitem__("train", {"max_epochs": 3}))
    assert config["models"]["classifier"]["train"]["max_epochs"] == 3
    assert config["models"]["classifier"]["train"]["patience"] == 4


def test_key_order_and_written_out_defaults_do_not_change_what_a_job_sees():
    """Snakemake compares params by repr, which follows key order: the validated config has
    the schema's order whatever the order written, and a default written out changes nothing."""

    def reorder(config: dict[str, Any]) -> None:
        classifier = config["models"]["classifier"]
        classifier["train"] = dict(reversed(classifier["train"].items()))
        config["models"]["classifier"] = dict(reversed(classifier.items()))

    default = validated()["models"]["classifier"]
    assert repr(validated(reorder)["models"]["classifier"]) == repr(default)
    explicit = validated(lambda c: c["models"]["classifier"]["train"].__setitem__("weight_decay", 0.0))
    assert default["train"]["weight_decay"] == 0.0
    assert repr(explicit["models"]["classifier"]) == repr(default)
    datasets = list(DEFAULT["datasets"])
    flipped = validated(lambda c: c.__setitem__("datasets", dict(reversed(c["datasets"].items()))))
    assert list(flipped["datasets"]) == datasets[::-1]  # named entries keep the order written


def test_flips_default_to_the_mirror_symmetric_datasets_and_are_refused_on_the_attributes():
    """The DDPM flips where the dataset kind is mirror-symmetric (auto); the t2i does not flip by
    default. The attributes data put the corner mark top left and the dot top right, so forced
    flips there would teach a model images that never occur (its captions have no side words,
    but its pixels do)."""
    config = validated(lambda c: c["models"]["t2i"].pop("train"))
    assert config["models"]["t2i"]["train"]["hflip"] is False
    assert config["models"]["ddpm"]["train"]["hflip"] == "auto"
    assert resolve_flips("auto", "ellipses") and resolve_flips("auto", "celeba")
    assert not resolve_flips("auto", "attributes") and not resolve_flips("auto", "image_folder")
    assert resolve_flips(True, "image_folder") and not resolve_flips(False, "ellipses")

    def flip_on_attributes(c: dict[str, Any]) -> None:
        c["models"]["t2i"].update(datasets=["attributes"], train={"hflip": True})

    with pytest.raises(ConfigError, match=r"models\.t2i\.train\.hflip.*allowed: false \(mirror images"):
        validated(flip_on_attributes)


def test_an_overlay_changes_the_attributes_task_keeping_the_inherited_correlations(tmp_path):
    """The default lists ring's correlation with square; an overlay cannot remove that key, so
    with task ring it gives ring's correlation with itself (1) and square's."""
    overlay = {
        "datasets": {
            "attributes": {"attributes": {"task": "ring", "correlations": {"ring": 1, "square": 0.6}}}
        }
    }
    (tmp_path / "ring.yaml").write_text(yaml.safe_dump(overlay))
    config = load_config([REPO / "config.yaml", tmp_path / "ring.yaml"], base_dir=REPO)
    params = config["datasets"]["attributes"]["attributes"]
    assert params["task"] == "ring" and params["correlations"]["blue"] == 0.8


def test_dataset_without_seed_gets_the_global_seed():
    config = validated(lambda c: c.__setitem__("seed", 7))
    assert config["datasets"]["ellipses"]["seed"] == 7


def test_dataset_seed_given_explicitly_is_kept():
    config = validated(lambda c: (c.__setitem__("seed", 7), c["datasets"]["ellipses"].__setitem__("seed", 3)))
    assert config["datasets"]["ellipses"]["seed"] == 3


def test_model_without_datasets_gets_every_dataset():
    config = validated()
    assert "datasets" not in DEFAULT["models"]["classifier"]
    assert config["models"]["classifier"]["datasets"] == ["attributes", "ellipses"]


def test_missing_top_level_keys_get_defaults():
    config = validated(lambda c: [c.pop(key) for key in ("seed", "device", "results")])
    assert (config["seed"], config["device"], config["results"]) == (0, "auto", "results")


def test_validation_does_not_change_its_input():
    config = mutated(lambda c: None)
    validate_config(config, REPO)
    assert config == DEFAULT


def test_a_valid_timm_architecture_is_accepted():
    config = validated(lambda c: c["models"]["classifier"].__setitem__("arch", "resnet18"))
    assert config["models"]["classifier"]["arch"] == "resnet18"


# ---------------------------------------------------------------- bad configs


def _set(*path_and_value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting config[path...] = value."""
    *path, key, value = path_and_value

    def mutate(config: dict[str, Any]) -> None:
        node = config
        for part in path:
            node = node[part]
        node[key] = value

    return mutate


def _pop(*path: str) -> Callable[[dict[str, Any]], None]:
    *parents, key = path

    def mutate(config: dict[str, Any]) -> None:
        node = config
        for part in parents:
            node = node[part]
        node.pop(key)

    return mutate


MISSING_FOLDER = {
    "kind": "image_folder",
    "image_folder": {"root": "no/such/folder", "csv": "config.yaml", "label_column": "label"},
}

# id: (mutation, key path, value as shown, a fragment of what is allowed)
BAD_CONFIGS = {
    "unknown-dataset-kind": (
        _set("datasets", "ellipses", "kind", "elipses"),
        "datasets.ellipses.kind",
        "'elipses'",
        "'ellipses'",
    ),
    "missing-dataset-kind": (
        _pop("datasets", "ellipses", "kind"),
        "datasets.ellipses.kind",
        "missing",
        "'attributes'",
    ),
    "negative-n-images": (
        _set("datasets", "ellipses", "n_images", -5),
        "datasets.ellipses.n_images",
        "-5",
        ">= 10",
    ),
    "zero-image-size": (
        _set("datasets", "ellipses", "image_size", 0),
        "datasets.ellipses.image_size",
        "0",
        ">= 8",
    ),
    "negative-image-size": (
        _set("datasets", "attributes", "image_size", -32),
        "datasets.attributes.image_size",
        "-32",
        ">= 8",
    ),
    "typo-in-top-level-key": (_set("seeed", 1), "seeed", "(value 1)", "seed"),
    "typo-in-nested-key": (
        _set("models", "ddpm", "train", "stpes", 10),
        "models.ddpm.train.stpes",
        "(value 10)",
        "steps",
    ),
    "unknown-timm-architecture": (
        _set("models", "classifier", "arch", "resnet_does_not_exist"),
        "models.classifier.arch",
        "'resnet_does_not_exist'",
        "timm architecture",
    ),
    "missing-checkpoint": (
        _set("models", "classifier", "checkpoint", "no/such/model.safetensors"),
        "models.classifier.checkpoint",
        "'no/such/model.safetensors'",
        "existing file",
    ),
    "regressor-target-not-a-factor": (
        _set("models", "regressor_aspect", "target", "brightness"),
        "models.regressor_aspect.target",
        "'brightness'",
        "log_aspect_ratio",
    ),
    "model-on-unknown-dataset": (
        _set("models", "classifier", "datasets", ["ellipses", "mnist"]),
        "models.classifier.datasets",
        "'mnist'",
        "attributes, ellipses",
    ),
    "oracle-on-dataset-without-attributes": (
        _set("models", "oracle", "datasets", ["ellipses"]),
        "models.oracle.datasets",
        "'ellipses'",
        "binary attributes (an oracle predicts them): attributes",
    ),
    "split-leaves-no-training-data": (
        _set("datasets", "ellipses", "split", {"val": 0.5, "test": 0.5}),
        "datasets.ellipses.split",
        "{'val': 0.5, 'test': 0.5}",
        "val + test < 1",
    ),
    "correlation-above-one": (
        _set("datasets", "attributes", "attributes", "correlations", "blue", 1.5),
        "datasets.attributes.attributes.correlations.blue",
        "1.5",
        "<= 1",
    ),
    "correlation-of-task-attribute": (
        _set("datasets", "attributes", "attributes", "correlations", "square", 0.5),
        "datasets.attributes.attributes.correlations.square",
        "0.5",
        "allowed: 1 or leave it out",
    ),
    "correlation-of-unknown-attribute": (
        _set("datasets", "attributes", "attributes", "correlations", "bleu", 0.5),
        "datasets.attributes.attributes.correlations",
        "'bleu'",
        "'blue'",
    ),
    "ellipses-too-large-for-image": (
        lambda c: c["datasets"]["ellipses"].update(image_size=16, ellipses={"area_fraction": [0.1, 0.6]}),
        "datasets.ellipses.ellipses.area_fraction",
        "[0.1, 0.6]",
        "must fit in 16 px images",
    ),
    "label-threshold-neither-number-nor-auto": (
        _set("datasets", "ellipses", "ellipses", "label", "threshold", "middle"),
        "datasets.ellipses.ellipses.label.threshold",
        "'middle'",
        "'auto'",
    ),
    "ddpm-attention-length-mismatch": (
        _set("models", "ddpm", "unet", "attention", [False, True]),
        "models.ddpm.unet.attention",
        "[False, True]",
        "3 levels",
    ),
    "ddpm-evaluation-encoder-not-an-encoder": (
        _set("models", "ddpm", "evaluation", "encoder", "classifier"),
        "models.ddpm.evaluation.encoder",
        "'classifier'",
        "encoder models: encoder",
    ),
    "bad-device": (_set("device", "gpu"), "device", "'gpu'", "cuda"),
    "unknown-model-kind": (
        _set("models", "classifier", "kind", "clasifier"),
        "models.classifier.kind",
        "'clasifier'",
        "'classifier'",
    ),
    "image-folder-root-missing": (
        _set("datasets", "folder", MISSING_FOLDER),
        "datasets.folder.image_folder.root",
        "'no/such/folder'",
        "existing path",
    ),
    "area-fraction-one-bound": (
        _set("datasets", "ellipses", "ellipses", "area_fraction", [0.1]),
        "datasets.ellipses.ellipses.area_fraction",
        "[0.1]",
        "at least 2 items",
    ),
    "unknown-explanation-method": (
        _set("explanations", "dime", "method", "dimee"),
        "explanations.dime.method",
        "'dimee'",
        "'dime'",
    ),
    "unknown-dime-parameter": (
        _set("explanations", "dime", "params", "lambda_x", 1.0),
        "explanations.dime.params.lambda_x",
        "1.0",
        "allowed keys: class_loss, clean_estimate",
    ),
    "unknown-ace-attack": (
        _set("explanations", "ace_l1", "params", "attack", "fgsm"),
        "explanations.ace_l1.params.attack",
        "'fgsm'",
        "'pgd'",
    ),
    "tau-beyond-steps": (
        _set("explanations", "dime", "params", "tau", 80),
        "explanations.dime.params.tau",
        "80",
        "1..steps (50)",
    ),
    "explanation-dataset-without-ddpm": (
        _set("explanations", "dime", "datasets", ["nowhere"]),
        "explanations.dime.datasets",
        "'nowhere'",
        "datasets the ddpm 'ddpm' is trained on",
    ),
    "explained-model-is-not-a-classifier": (
        _set("explanations", "ace_l1", "classifier", "oracle"),
        "explanations.ace_l1.classifier",
        "'oracle'",
        "classifier models: classifier",
    ),
    "vgg-perceptual-without-weights": (
        _set("explanations", "dime", "perceptual", {"network": "vgg"}),
        "explanations.dime.perceptual.weights",
        "None",
        "existing VGG state-dict file",
    ),
    "freemcg-steps-beyond-start": (
        _set("explanations", "freemcg", "params", "steps", 500),
        "explanations.freemcg.params.steps",
        "500",
        "1..401 (min(t_start·T, T - 1) + 1)",
    ),
    "freemcg-steps-from-a-start-rounded-to-t": (  # the chain starts at T - 1, not at round(0.9996 T)
        lambda c: c["explanations"]["freemcg"]["params"].update(t_start=0.9996, steps=1001),
        "explanations.freemcg.params.steps",
        "1001",
        "1..1000",
    ),
    "ablation-labels-that-collide": (
        _set("ablations", {"c": {"explanation": "dime", "vary": {"lambda_c": [[8], 8]}}}),
        "ablations.c.vary",
        "'lambda_c'",
        "values whose labels differ",
    ),
    "ablation-label-with-a-comma": (
        _set("ablations", {"c": {"explanation": "dime", "vary": {"class_loss": ["ce", "a,b"]}}}),
        "ablations.c.vary",
        "'class_loss=a,b'",
        "without commas or spaces",
    ),
    "ellipse-label-threshold-outside-its-factors-range": (  # every image would be class 0
        _set("datasets", "ellipses", "ellipses", "label", {"factor": "aspect_ratio", "threshold": 10}),
        "datasets.ellipses.ellipses.label.threshold",
        "10",
        "a threshold inside the range aspect_ratio is drawn from, (1, 3)",
    ),
    "ellipse-centre-threshold-nearer-the-border-than-any-centre": (  # centres keep off the border
        _set("datasets", "ellipses", "ellipses", "label", {"factor": "center_x", "threshold": 2.5}),
        "datasets.ellipses.ellipses.label.threshold",
        "2.5",
        "a threshold inside the range center_x is drawn from, (3.",
    ),
    "ellipse-label-factor-that-does-not-vary": (
        _set("datasets", "ellipses", "ellipses", "aspect_ratio", [2.0, 2.0]),
        "datasets.ellipses.ellipses.label.threshold",
        "'auto'",
        "(0.6931, 0.6931)",
    ),
    "unet-groups-not-dividing-the-widths": (
        _set("models", "ddpm", "unet", "norm_num_groups", 5),
        "models.ddpm.unet.norm_num_groups",
        "5",
        "a divisor of every unet.block_out_channels entry ([16, 32, 64])",
    ),
    "ddpm-forced-flips-on-the-attributes": (
        _set("models", "ddpm", "train", "hflip", True),
        "models.ddpm.train.hflip",
        "True",
        "false or auto (mirror images of attributes never occur in the data)",
    ),
    "diffae-encoder-width-not-a-multiple-of-the-groups": (
        _set("models", "diffae", "encoder_widths", [12, 24]),
        "models.diffae.encoder_widths",
        "[12, 24]",
        "a multiple of min(unet.norm_num_groups, entry) = 8 or below it",
    ),
    "t2i-groups-not-dividing-the-widths": (
        _set("models", "t2i", "network", "block_out_channels", [16, 32, 60]),
        "models.t2i.network.norm_num_groups",
        "8",
        "a divisor of every network.block_out_channels entry ([16, 32, 60])",
    ),
    "unet-too-deep-for-the-image": (
        lambda c: c["models"]["ddpm"]["unet"].update(block_out_channels=[8] * 7, attention=[False] * 7),
        "models.ddpm.unet.block_out_channels",
        "[8, 8, 8, 8, 8, 8, 8]",
        "must be divisible by 2^(levels-1)",
    ),
    "schedule-beta-start-above-beta-end": (
        _set("models", "ddpm", "schedule", "beta_start", 0.03),
        "models.ddpm.schedule.beta_start",
        "0.03",
        "beta_start < beta_end",
    ),
    "ellipse-factor-range-reversed": (
        _set("datasets", "ellipses", "ellipses", "area_fraction", [0.3, 0.1]),
        "datasets.ellipses.ellipses.area_fraction",
        "[0.3, 0.1]",
        "[low, high] with low <= high",
    ),
    "classifier-not-trained-on-an-explained-dataset": (
        _set("explanations", "dime", "classifier", "hit"),
        "explanations.dime.classifier",
        "'hit'",
        "'hit' must be trained on ['attributes'] too",
    ),
    "time-tokens-of-another-classifier": (
        _set("explanations", "time", "classifier", "hit"),
        "explanations.time.tokens",
        "'tokens'",
        "a distill entry with classifier 'hit'",
    ),
    "time-tokens-not-distilled-on-an-explained-dataset": (
        lambda c: (
            c["models"]["t2i"].update(datasets=["ellipses", "attributes"]),
            c["distill"]["tokens"].update(datasets=["ellipses"]),
            c["explanations"]["time"].update(datasets=["ellipses", "attributes"]),
        ),
        "explanations.time.tokens",
        "'tokens'",
        "a distill entry run on ['attributes'] too",
    ),
    "distill-on-a-dataset-the-t2i-skips": (
        _set("distill", "tokens", "datasets", ["attributes"]),
        "distill.tokens.datasets",
        "'attributes'",
        "datasets the t2i 't2i' is trained on",
    ),
    "ddpm-evaluation-regressors-of-other-datasets": (
        _set("models", "ddpm", "datasets", ["attributes"]),
        "models.ddpm.evaluation.regressors",
        "'regressor_aspect'",
        "a regressor trained on at least one of ['attributes']",
    ),
    "ddpm-evaluation-encoder-of-fewer-datasets": (
        _set("models", "encoder", "datasets", ["ellipses"]),
        "models.ddpm.evaluation.encoder",
        "'encoder'",
        "'encoder' must be trained on ['attributes'] too",
    ),
    "counterfactual-oracle-is-a-classifier": (
        _set("counterfactual_metrics", {"oracle": "classifier"}),
        "counterfactual_metrics.oracle",
        "'classifier'",
        "oracle models: oracle",
    ),
    "time-attempt-with-a-negative-guidance-scale": (
        _set("explanations", "time", "params", {"attempts": [[25, 3], [30, -4]]}),
        "explanations.time.params.attempts",
        "[30, -4]",
        "guidance scale w >= 0",
    ),
    "attention-rollout-of-a-cnn": (
        _set("attributions", "vit_rollout", "classifier", "classifier"),
        "attributions.vit_rollout.classifier",
        "'classifier'",
        "a classifier with arch hit or a timm ViT",
    ),
    "empty-validation-split": (
        _set("datasets", "ellipses", "split", {"val": 0.0, "test": 0.2}),
        "datasets.ellipses.split.val",
        "0.0",
        "> 0",
    ),
    "validation-split-rounding-to-no-image": (
        lambda c: c["datasets"]["ellipses"].update(n_images=10, split={"val": 0.04, "test": 0.2}),
        "datasets.ellipses.split.val",
        "0.04",
        "at least one val image of n_images=10",
    ),
    "dime-steps-beyond-the-schedule": (
        _set("explanations", "dime", "params", "steps", 2000),
        "explanations.dime.params.steps",
        "2000",
        "1..1000 (num_train_timesteps of models.ddpm)",
    ),
    "ace-ablation-steps-beyond-the-schedule": (
        _set("ablations", {"ace_steps": {"explanation": "ace_l1", "vary": {"steps": [25, 1500]}}}),
        "ablations.ace_steps.vary[steps=1500].params.steps",
        "1500",
        "1..1000",
    ),
    "time-steps-beyond-the-schedule": (
        _set("explanations", "time", "params", "steps", 1001),
        "explanations.time.params.steps",
        "1001",
        "1..1000 (num_train_timesteps of models.t2i)",
    ),
    "ddpm-evaluation-steps-beyond-the-schedule": (
        _set("models", "ddpm", "evaluation", "sampling_steps", 1001),
        "models.ddpm.evaluation.sampling_steps",
        "1001",
        "1..1000",
    ),
    "diffae-inversion-steps-up-to-the-schedule": (  # s inversion steps visit s + 1 timesteps
        _set("models", "diffae", "latents", "encode_steps", 1000),
        "models.diffae.latents.encode_steps",
        "1000",
        "1..999",
    ),
    "t2i-check-steps-beyond-the-schedule": (
        _set("models", "t2i", "check", {"steps": 1001}),
        "models.t2i.check.steps",
        "1001",
        "1..1000",
    ),
    "variance-sampling-steps-beyond-the-schedule": (
        _set("variance", "ellipse_features", "sampling", "steps", 1001),
        "variance.ellipse_features.sampling.steps",
        "1001",
        "1..1000 (num_train_timesteps of models.ddpm)",
    ),
    "variance-min-accepted-above-the-samples-per-value": (
        _set("variance", "ellipse_features", "min_accepted", 101),
        "variance.ellipse_features.min_accepted",
        "101",
        "at most sampling.samples_per_value (100)",
    ),
    "variance-one-sample-per-value": (
        _set("variance", "ellipse_features", "sampling", "samples_per_value", 1),
        "variance.ellipse_features.sampling.samples_per_value",
        "1",
        ">= 2",
    ),
    "freemcg-unknown-mode": (
        _set("explanations", "freemcg", "params", "mode", "sde"),
        "explanations.freemcg.params.mode",
        "'sde'",
        "'ddim', 'ascent'",
    ),
    "gcd-direction-beyond-the-kept-h-directions": (
        _set("explanations", "gcd", "params", "direction", "h9"),
        "explanations.gcd.params.direction",
        "'h9'",
        "g or h1..h8 (h_directions)",
    ),
    "gcd-direction-beyond-the-latent-dim": (
        lambda config: [
            _set("models", "diffae", "latent_dim", 4)(config),
            _set("explanations", "gcd", "params", "direction", "h5")(config),
        ],
        "explanations.gcd.params.direction",
        "'h5'",
        "g or h1..h4 (the DiffAE's latent_dim)",
    ),
    "gcd-decode-steps-beyond-the-schedule": (
        _set("explanations", "gcd", "params", "decode_steps", 1000),
        "explanations.gcd.params.decode_steps",
        "1000",
        "1..999",
    ),
    "gcd-diffae-that-is-a-ddpm": (
        _set("explanations", "gcd", "diffae", "ddpm"),
        "explanations.gcd.diffae",
        "'ddpm'",
        "diffae models: diffae",
    ),
    "ablation-of-gcd": (
        _set("ablations", "freemcg_table4", "explanation", "gcd"),
        "ablations.freemcg_table4.explanation",
        "'gcd'",
        "non-gcd explanations: ace_l1, dime, freemcg",
    ),
    "diffae-latent-dim-too-large": (
        _set("models", "diffae", "latent_dim", 1024),
        "models.diffae.latent_dim",
        "1024",
        "512",
    ),
    "explanation-named-like-a-results-folder": (
        _set("explanations", "attributions", {"method": "dime"}),
        "explanations",
        "'attributions'",
        "any name but attributions",
    ),
    "unknown-attribution-method": (
        _set("attributions", "gradient", "method", "saliency"),
        "attributions.gradient.method",
        "'saliency'",
        "'integrated_gradients'",
    ),
    "unknown-baseline-parameter": (
        _set("attributions", "rise", "params", {"n_masks": 10}),
        "attributions.rise.params.n_masks",
        "10",
        "allowed keys: baseline, batch, cells, masks, p",
    ),
    "bad-ig-baseline": (
        _set("attributions", "integrated_gradients", "params", {"baseline": "white"}),
        "attributions.integrated_gradients.params.baseline",
        "'white'",
        "'black', 'zero'",
    ),
    "freemcg-map-without-ddpm": (
        _set("attributions", "freemcg_map", "ddpm", "classifier"),
        "attributions.freemcg_map.ddpm",
        "'classifier'",
        "ddpm models: ddpm",
    ),
    "attribution-dataset-without-classifier": (
        _set("attributions", "gradient", "datasets", ["nowhere"]),
        "attributions.gradient.datasets",
        "'nowhere'",
        "datasets the classifier 'classifier' is trained on",
    ),
    "ablation-of-a-missing-explanation": (
        _set("ablations", "freemcg_table4", "explanation", "lime"),
        "ablations.freemcg_table4.explanation",
        "'lime'",
        "explanations: ace_l1, dime, freemcg, gcd, time",
    ),
    "ablation-of-an-unknown-parameter": (
        _set("ablations", "freemcg_table4", "vary", {"particle_count": [10]}),
        "ablations.freemcg_table4.vary",
        "'particle_count'",
        "parameters of freemcg",
    ),
    "ablation-value-out-of-range": (
        _set("ablations", "freemcg_table4", "vary", {"t_start": [1.5]}),
        "ablations.freemcg_table4.vary",
        "'t_start=1.5'",
        "greater than or equal to the maximum of 1",
    ),
    "ablation-grid-point-beyond-the-schedule": (
        _set("ablations", "time_grid", "vary", {"tau": [25, 60], "w": [3]}),
        "ablations.time_grid.vary[tau=60+w=3].params.attempts",
        "60",
        "whole tau in 1..steps-1 (49)",
    ),
    "ablation-lists-a-value-twice": (
        _set("ablations", "time_grid", "vary", {"tau": [25, 25], "w": [3]}),
        "ablations.time_grid.vary.tau",
        "[25, 25]",
        "non-unique",
    ),
    "metric-encoder-is-not-an-encoder": (
        _set("counterfactual_metrics", {"encoder": "classifier"}),
        "counterfactual_metrics.encoder",
        "'classifier'",
        "encoder models: encoder",
    ),
    "hit-unknown-arch-param": (
        _set("models", "hit", "arch_params", {"layers": 3}),
        "models.hit.arch_params.layers",
        "(value 3)",
        "allowed keys: attn_drop, depth, embed_dim, mlp_ratio, num_heads, patch_size",
    ),
    "hit-zero-patch-size": (  # the divisibility checks would divide by it
        _set("models", "hit", "arch_params", {"patch_size": 0}),
        "models.hit.arch_params.patch_size",
        "0",
        ">= 1",
    ),
    "hit-zero-heads": (
        _set("models", "hit", "arch_params", {"num_heads": 0}),
        "models.hit.arch_params.num_heads",
        "0",
        ">= 1",
    ),
    "hit-patch-size-as-a-string": (
        _set("models", "hit", "arch_params", {"patch_size": "4"}),
        "models.hit.arch_params.patch_size",
        "'4'",
        "allowed type: integer",
    ),
    "hit-without-layers": (
        _set("models", "hit", "arch_params", {"depth": 0}),
        "models.hit.arch_params.depth",
        "0",
        ">= 1",
    ),
    "simple-cnn-channels-not-a-list": (
        _set("models", "classifier", "arch_params", {"channels": 5}),
        "models.classifier.arch_params.channels",
        "5",
        "allowed type: array",
    ),
    "simple-cnn-without-blocks": (
        _set("models", "classifier", "arch_params", {"channels": []}),
        "models.classifier.arch_params.channels",
        "[]",
        "at least 1 items",
    ),
    "simple-cnn-unknown-arch-param": (
        _set("models", "regressor_area", "arch_params", {"width": 8}),
        "models.regressor_area.arch_params.width",
        "(value 8)",
        "allowed keys: channels, hidden",
    ),
    "simple-cnn-too-many-blocks-for-the-image": (
        _set("models", "classifier", "arch_params", {"channels": [8] * 6}),
        "datasets.attributes.image_size",
        "32",
        "image_size >= 64",
    ),
    "hit-patch-does-not-tile-the-image": (
        _set("models", "hit", "arch_params", {"patch_size": 5}),
        "models.hit.arch_params.patch_size",
        "5",
        "a divisor of datasets.ellipses.image_size (32)",
    ),
    "hit-heads-do-not-split-the-width": (
        _set("models", "hit", "arch_params", {"embed_dim": 30, "num_heads": 4}),
        "models.hit.arch_params.num_heads",
        "4",
        "a divisor of embed_dim",
    ),
    "hit-maps-of-a-cnn": (
        _set("attributions", "hit", "classifier", "classifier"),
        "attributions.hit.classifier",
        "'classifier'",
        "a classifier with arch hit",
    ),
    "hit-analysis-of-a-vit": (
        _set("interpretable", "hit", "model", "vit"),
        "interpretable.hit.model",
        "'vit'",
        "classifiers with arch hit: hit",
    ),
    "hit-analysis-baseline-is-not-a-classifier": (
        _set("interpretable", "hit", "baseline", "encoder"),
        "interpretable.hit.baseline",
        "'encoder'",
        "classifier models:",
    ),
    "time-tokens-of-no-distill-entry": (
        _set("explanations", "time", "tokens", "nope"),
        "explanations.time.tokens",
        "'nope'",
        "distill entries: tokens",
    ),
    "distill-into-a-ddpm": (
        _set("distill", "tokens", "t2i", "ddpm"),
        "distill.tokens.t2i",
        "'ddpm'",
        "t2i models: t2i",
    ),
    "distill-timesteps-out-of-order": (
        _set("distill", "tokens", "classes", "timesteps", [0.7, 0.4]),
        "distill.tokens.classes.timesteps",
        "[0.7, 0.4]",
        "allowed: [a, b] with 0 <= a < b <= 1",
    ),
    "t2i-with-flips-that-change-the-captions": (
        _set("models", "t2i", "train", "hflip", True),
        "models.t2i.train.hflip",
        "True",
        "allowed: false",
    ),
    "t2i-cross-attention-flags-per-level": (
        _set("models", "t2i", "network", "cross_attention", [True]),
        "models.t2i.network.cross_attention",
        "[True]",
        "one flag per block_out_channels level",
    ),
    "time-tau-beyond-the-schedule": (
        _set("explanations", "time", "params", {"attempts": [[50, 3]]}),
        "explanations.time.params.attempts",
        "50",
        "1..steps-1 (49)",
    ),
    "time-tau-without-w": (
        _set("explanations", "time", "params", {"tau": 30}),
        "explanations.time.params.tau",
        "30",
        "set together with params.w",
    ),
    "variance-feature-of-an-unknown-kind": (
        _set("variance", "ellipse_features", "features", "size", {"kind": "ordinal"}),
        "variance.ellipse_features.features.size.kind",
        "'ordinal'",
        "'discrete', 'continuous', 'region'",
    ),
    "variance-feature-named-plain": (
        _set("variance", "ellipse_features", "features", "plain", {"kind": "region", "mask": "ellipse"}),
        "variance.ellipse_features.features",
        "'plain'",
        "allowed: anything but 'plain'",
    ),
    "variance-regressor-is-a-classifier": (
        _set(
            "variance",
            "ellipse_features",
            "features",
            "size",
            {"kind": "continuous", "regressor": "classifier"},
        ),
        "variance.ellipse_features.features.size.regressor",
        "'classifier'",
        "regressor models: regressor_area, regressor_aspect",
    ),
    "variance-region-of-an-absent-mask": (
        _set("variance", "ellipse_features", "features", "ellipse", {"kind": "region", "mask": "ring"}),
        "variance.ellipse_features.features.ellipse.mask",
        "'ring'",
        "masks of dataset 'ellipses': ellipse",
    ),
    "variance-discrete-feature-of-an-absent-attribute": (
        _set("variance", "attribute_features", "features", "blue", {"kind": "discrete", "attribute": "hat"}),
        "variance.attribute_features.features.blue.attribute",
        "'hat'",
        "attributes of dataset 'attributes': square, blue,",
    ),
    "variance-sampled-without-a-ddpm": (
        _set("variance", "ellipse_features", "ddpm", "diffae"),
        "variance.ellipse_features.ddpm",
        "'diffae'",
        "ddpm models: ddpm",
    ),
    "variance-of-a-dataset-the-classifier-skips": (
        _set("variance", "attribute_features", "classifier", "hit"),
        "variance.attribute_features.datasets",
        "attributes",
        "datasets the classifier 'hit' is trained on",
    ),
    "split-leaving-no-training-image": (
        lambda c: c["datasets"]["ellipses"].update(n_images=10, split={"val": 0.55, "test": 0.44}),
        "datasets.ellipses.split",
        "'val': 0.55",
        "leaving at least one training image of n_images=10",
    ),
    "unet-heads-wider-than-a-level": (
        _set("models", "ddpm", "unet", "attention_head_dim", 65),
        "models.ddpm.unet.attention_head_dim",
        "65",
        "at most 64, the narrowest attention level's width",
    ),
    "unet-heads-wider-than-an-attending-level": (
        lambda c: c["models"]["ddpm"]["unet"].update(attention=[False, True, False], attention_head_dim=48),
        "models.ddpm.unet.attention_head_dim",
        "48",
        "at most 32",
    ),
    "t2i-text-heads-not-dividing-the-width": (
        _set("models", "t2i", "network", "text_heads", 3),
        "models.t2i.network.text_heads",
        "3",
        "a divisor of network.text_width (64)",
    ),
    "occlusion-window-larger-than-the-image": (
        _set("attributions", "occlusion", "params", {"window": 33}),
        "attributions.occlusion.params.window",
        "33",
        "at most the image size 32",
    ),
    "coverage-k-as-large-as-the-test-split": (
        _set("variance", "ellipse_features", "coverage_k", [1, 2000]),
        "variance.ellipse_features.coverage_k",
        "[1, 2000]",
        "below the smallest test split (2000 images)",
    ),
    "missing-inception-file": (
        _set("counterfactual_metrics", {"inception_weights": "no/inception.pt"}),
        "counterfactual_metrics.inception_weights",
        "'no/inception.pt'",
        "existing file",
    ),
}


@pytest.mark.parametrize(("mutate", "key", "value", "allowed"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_refused_naming_key_value_and_what_is_allowed(mutate, key, value, allowed):
    with pytest.raises(ConfigError) as raised:
        validated(mutate)
    message = str(raised.value)
    assert f"'{key}'" in message
    assert value in message
    assert allowed in message


# ---------------------------------------------------------------- the workflow


def test_snakemake_refuses_a_bad_config_before_any_job(tmp_path):
    results = tmp_path / "results"
    config = mutated(_set("datasets", "ellipses", "kind", "elipses"))
    config["results"] = str(results)
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).parent / "snakemake"
    done = subprocess.run(
        [str(snakemake), "-n", "--cores", "1", "--configfile", str(configfile)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "datasets.ellipses.kind" in output
    assert "'ellipses'" in output
    assert not results.exists()


def test_schema_enums_match_the_generators_names():
    from diffxai.config.load import load_schema
    from diffxai.data.attributes import ATTRIBUTE_NAMES
    from diffxai.data.ellipses import LABEL_FACTORS

    defs = load_schema()["$defs"]
    attributes = defs["dataset_attributes"]["properties"]["attributes"]["properties"]
    assert attributes["task"]["enum"] == ATTRIBUTE_NAMES
    assert attributes["correlations"]["propertyNames"]["enum"] == ATTRIBUTE_NAMES
    label = defs["dataset_ellipses"]["properties"]["ellipses"]["properties"]["label"]["properties"]
    assert label["factor"]["enum"] == LABEL_FACTORS


def test_the_schema_is_parsed_once_and_each_caller_gets_its_own_copy():
    from diffxai.config.load import SCHEMA_PATH, load_schema

    first = load_schema()
    assert first == yaml.safe_load(SCHEMA_PATH.read_text())  # libyaml reads it as PyYAML does
    first["$defs"].clear()  # a caller changing its copy ...
    assert load_schema()["$defs"]  # ... changes no one else's
    assert validated()["seed"] == DEFAULT["seed"]


def test_hit_defaults_read_from_the_source_match_the_constructor():
    import inspect

    from diffxai.config.checks import hit_defaults
    from diffxai.models.hit import HiT

    signature = inspect.signature(HiT).parameters.values()
    assert hit_defaults() == {
        p.name: p.default for p in signature if p.default is not inspect.Parameter.empty
    }


def test_the_schemas_hit_arch_params_are_the_constructors_keyword_parameters():
    from diffxai.config.checks import hit_defaults
    from diffxai.config.load import load_schema

    assert set(load_schema()["$defs"]["hit_arch_params"]["properties"]) == set(hit_defaults())


def test_the_timm_architecture_list_matches_the_installed_timm():
    import timm

    from diffxai.config.checks import timm_architectures

    assert timm_architectures() == frozenset(timm.list_models())


def test_a_celeba_task_must_be_a_column_of_its_attribute_file(tmp_path):
    (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True)
    (tmp_path / "celeba" / "list_attr_celeba.txt").write_text("1\nBald Smiling\n000001.jpg -1 1\n")

    def faces(task: str, attr_file: str = "list_attr_celeba.txt", partition_file: str | None = None):
        celeba = {"root": "celeba/img_align_celeba", "task": task, "attr_file": attr_file}
        dataset = {"kind": "celeba", "celeba": {**celeba, "partition_file": partition_file}}
        return mutated(_set("datasets", "faces", dataset))

    assert validate_config(faces("Smiling"), tmp_path)["datasets"]["faces"]["celeba"]["task"] == "Smiling"
    with pytest.raises(ConfigError, match=r"'datasets.faces.celeba.task' has value 'Young'.*Bald, Smiling"):
        validate_config(faces("Young"), tmp_path)
    with pytest.raises(ConfigError, match=r"'datasets.faces.celeba.attr_file' has value 'attrs.txt'"):
        validate_config(faces("Smiling", "attrs.txt"), tmp_path)
    with pytest.raises(ConfigError, match=r"'datasets.faces.celeba.partition_file' has value 'parts.txt'"):
        validate_config(faces("Smiling", partition_file="parts.txt"), tmp_path)
    (tmp_path / "celeba" / "parts.txt").write_text("000001.jpg 0\n")
    assert validate_config(faces("Smiling", partition_file="parts.txt"), tmp_path)
