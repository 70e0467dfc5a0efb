"""Checks the JSON schema cannot express: cross-references, files, architectures.

Each check returns messages in the same form as schema errors: the key, the
value and what is allowed.
"""

from __future__ import annotations

import ast
import functools
import math
from pathlib import Path
from typing import Any

from diffxai.config.ablation_design import ablation_settings
from diffxai.data.attributes import ATTRIBUTE_NAMES
from diffxai.data.attributes import FACTOR_NAMES as ATTRIBUTE_FACTORS
from diffxai.data.ellipses import FACTOR_NAMES as ELLIPSE_FACTORS
from diffxai.data.ellipses import label_range, label_threshold
from diffxai.data.kinds import ASYMMETRIC_KINDS, celeba_file
from diffxai.paths import resolve
from diffxai.provenance import module_file


def _msg(key: str, value: Any, allowed: str) -> str:
    return f"config key '{key}' has value {value!r}: {allowed}"


def _steps_within(
    key: str, steps: int, model_key: str, model: dict[str, Any], reserved: int = 0
) -> list[str]:
    """A sampler's ``steps`` name distinct timesteps of ``model``'s schedule: at most T − ``reserved``
    (a DDIM inversion of s steps visits s + 1 timesteps, so it reserves 1)."""
    limit = model["schedule"]["num_train_timesteps"] - reserved
    if steps <= limit:
        return []
    bound = "num_train_timesteps" + (f" - {reserved}" if reserved else "")
    return [_msg(key, steps, f"allowed: 1..{limit} ({bound} of {model_key})")]


def dataset_factor_names(dataset: dict[str, Any]) -> list[str]:
    """Continuous factors a dataset of this config will store."""
    kind = dataset["kind"]
    if kind == "ellipses":
        return list(ELLIPSE_FACTORS)
    if kind == "attributes":
        return list(ATTRIBUTE_FACTORS)
    if kind == "hdf5":
        return list(dataset["hdf5"]["factors"])
    return []


def dataset_attribute_names(dataset: dict[str, Any]) -> list[str] | None:
    """Binary attributes a dataset of this config will store (None: known only from its files)."""
    kind = dataset["kind"]
    if kind == "attributes":
        return list(ATTRIBUTE_NAMES)
    if kind == "image_folder":
        return list(dataset["image_folder"]["attribute_columns"])
    return [] if kind == "ellipses" else None


def dataset_mask_names(dataset: dict[str, Any]) -> list[str] | None:
    """Region masks a dataset of this config will store (None: known only from its files)."""
    kind = dataset["kind"]
    if kind == "ellipses":
        return ["ellipse"]
    if kind == "attributes":
        return list(ATTRIBUTE_NAMES)
    return None


def dataset_has_attributes(dataset: dict[str, Any]) -> bool:
    kind = dataset["kind"]
    if kind == "image_folder":
        return bool(dataset["image_folder"]["attribute_columns"])
    return kind in ("attributes", "celeba")


def _check_dataset(name: str, dataset: dict[str, Any], base_dir: Path) -> list[str]:
    key, kind, size = f"datasets.{name}", dataset["kind"], dataset["image_size"]
    errors = []
    split = dataset["split"]
    if split["val"] + split["test"] >= 1:
        errors.append(_msg(f"{key}.split", split, "allowed: val + test < 1 (some training data must remain)"))
    if "n_images" in dataset:  # generated data: the split's sizes are known now
        n = dataset["n_images"]
        for part in ("val", "test"):
            if round(n * split[part]) < 1:
                allowed = f"allowed: at least one {part} image of n_images={n}"
                errors.append(_msg(f"{key}.split.{part}", split[part], allowed))
        if round(n * split["val"]) + round(n * split["test"]) >= n:
            allowed = f"allowed: val and test leaving at least one training image of n_images={n}"
            errors.append(_msg(f"{key}.split", split, allowed))
    if kind == "ellipses":
        params = dataset["ellipses"]
        for field in ("area_fraction", "aspect_ratio"):
            low, high = params[field]
            if low > high:
                errors.append(
                    _msg(f"{key}.ellipses.{field}", params[field], "allowed: [low, high] with low <= high")
                )
        low, high = label_range(params, size)
        threshold = label_threshold(params, size)
        if not low < threshold < high:
            factor = params["label"]["factor"]
            interval = f"({low:.4g}, {high:.4g})"
            allowed = (
                f"allowed: a threshold inside the range {factor} is drawn from, {interval} (else one class)"
            )
            errors.append(_msg(f"{key}.ellipses.label.threshold", params["label"]["threshold"], allowed))
        area = params["area_fraction"][1] * size**2
        aspect = params["aspect_ratio"][1]
        major = math.sqrt(area * aspect / math.pi)
        if 2 * (major + 1) > size:
            errors.append(
                _msg(
                    f"{key}.ellipses.area_fraction",
                    params["area_fraction"],
                    f"the largest ellipse (semi-major axis {major:.1f} px) must fit in {size} px images; "
                    "lower the area fraction or the aspect ratio",
                )
            )
    if kind == "attributes":
        params = dataset["attributes"]
        # the task's own entry may only be its correlation with itself, so that an overlay that
        # changes the task can keep the correlations it inherits (it cannot remove a key)
        own = params["correlations"].get(params["task"], 1.0)
        if own != 1.0:
            errors.append(
                _msg(
                    f"{key}.attributes.correlations.{params['task']}",
                    own,
                    "allowed: 1 or leave it out (this is the task attribute: its correlation with itself)",
                )
            )
    files = {
        "image_folder": [
            ("image_folder.root", dataset.get("image_folder", {}).get("root")),
            ("image_folder.csv", dataset.get("image_folder", {}).get("csv")),
        ],
        "celeba": [("celeba.root", dataset.get("celeba", {}).get("root"))],
        "hdf5": [("hdf5.path", dataset.get("hdf5", {}).get("path"))],
    }.get(kind, [])
    for field, path in files:
        if not resolve(path, base_dir).exists():
            errors.append(
                _msg(f"{key}.{field}", path, "allowed: an existing path (relative to the workflow directory)")
            )
    if kind == "celeba" and not errors:
        errors += _check_celeba_task(key, dataset["celeba"], base_dir)
    return errors


def _check_celeba_task(key: str, params: dict[str, Any], base_dir: Path) -> list[str]:
    """The attribute and partition files exist; the task is a column of the attribute file
    (its second line names them; only the head is read)."""
    allowed = "allowed: an existing file (relative to celeba.root's parent)"
    if params["partition_file"] and not celeba_file(params, "partition_file", base_dir).is_file():
        return [_msg(f"{key}.celeba.partition_file", params["partition_file"], allowed)]
    path = celeba_file(params, "attr_file", base_dir)
    if not path.is_file():
        return [_msg(f"{key}.celeba.attr_file", params["attr_file"], allowed)]
    with path.open() as lines:
        next(lines, "")  # the image count
        names = next(lines, "").split()
    if params["task"] not in names:
        return [
            _msg(
                f"{key}.celeba.task",
                params["task"],
                f"allowed: attributes of {path.name}: {', '.join(names)}",
            )
        ]
    return []


TIMM_MODELS = Path(__file__).with_name("timm_models.txt")


@functools.cache
def timm_architectures() -> frozenset[str]:
    """The pinned timm's architecture names, from a list kept beside this module (importing timm
    would import torch and torchvision into every Snakemake start: seconds per job)."""
    lines = TIMM_MODELS.read_text().splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def _check_arch(key: str, arch: str) -> list[str]:
    if arch in ("simple_cnn", "hit"):
        return []
    if arch not in timm_architectures():
        return [
            _msg(key, arch, "allowed: simple_cnn, hit or a timm architecture name (see timm.list_models())")
        ]
    return []


def hit_defaults() -> dict[str, Any]:
    """HiT's constructor parameters and defaults, read from its source (importing it would import
    torch into every Snakemake start)."""
    tree = ast.parse(module_file("diffxai.models.hit").read_text())
    init = next(
        node
        for cls in tree.body
        if isinstance(cls, ast.ClassDef) and cls.name == "HiT"
        for node in cls.body
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    )
    arguments = init.args.args[len(init.args.args) - len(init.args.defaults) :]
    return {
        arg.arg: ast.literal_eval(default) for arg, default in zip(arguments, init.args.defaults, strict=True)
    }


def _check_hit(key: str, model: dict[str, Any], datasets: dict[str, Any]) -> list[str]:
    """HiT's patches tile every image and its heads split the width (the schema's hit_arch_params
    has the names and types)."""
    settings = {**hit_defaults(), **model["arch_params"]}
    errors = []
    if settings["embed_dim"] % settings["num_heads"]:
        errors.append(
            _msg(f"{key}.arch_params.num_heads", settings["num_heads"], "allowed: a divisor of embed_dim")
        )
    for name in model["datasets"]:
        size = datasets[name]["image_size"]
        if size % settings["patch_size"]:
            errors.append(
                _msg(
                    f"{key}.arch_params.patch_size",
                    settings["patch_size"],
                    f"allowed: a divisor of datasets.{name}.image_size ({size})",
                )
            )
    return errors


def _check_simple_cnn(key: str, model: dict[str, Any], datasets: dict[str, Any]) -> list[str]:
    """Each conv block halves the image, so simple_cnn needs image_size >= 2^blocks."""
    blocks = len(model["arch_params"].get("channels", (32, 64, 64, 64)))
    return [
        _msg(
            f"datasets.{name}.image_size",
            datasets[name]["image_size"],
            f"allowed for {key} (simple_cnn, {blocks} blocks): image_size >= {2**blocks}",
        )
        for name in model["datasets"]
        if name in datasets and datasets[name]["image_size"] < 2**blocks
    ]


def _check_model(name: str, model: dict[str, Any], config: dict[str, Any], base_dir: Path) -> list[str]:
    key, kind = f"models.{name}", model["kind"]
    datasets = config["datasets"]
    errors = []
    for dataset_name in model["datasets"]:
        if dataset_name not in datasets:
            errors.append(_msg(f"{key}.datasets", dataset_name, "allowed: " + ", ".join(sorted(datasets))))
    if errors:
        return errors
    if model.get("checkpoint") and not resolve(model["checkpoint"], base_dir).exists():
        errors.append(
            _msg(f"{key}.checkpoint", model["checkpoint"], "allowed: null or an existing file or directory")
        )
    if "arch" in model:
        errors += _check_arch(f"{key}.arch", model["arch"])
    if model.get("arch") == "simple_cnn":
        errors += _check_simple_cnn(key, model, datasets)
    if model.get("arch") == "hit":
        errors += _check_hit(key, model, datasets)
    for dataset_name in model["datasets"]:
        dataset = datasets[dataset_name]
        if kind == "regressor":
            factors = dataset_factor_names(dataset)
            if model["target"] not in factors:
                errors.append(
                    _msg(
                        f"{key}.target",
                        model["target"],
                        f"allowed for dataset {dataset_name!r}: "
                        + (", ".join(factors) or "none (it has no factors)"),
                    )
                )
        if kind == "oracle" and not dataset_has_attributes(dataset):
            with_attributes = sorted(n for n, d in datasets.items() if dataset_has_attributes(d))
            allowed = "allowed: datasets with binary attributes (an oracle predicts them): " + (
                ", ".join(with_attributes) or "none"
            )
            errors.append(_msg(f"{key}.datasets", dataset_name, allowed))
    if kind in ("ddpm", "diffae", "t2i"):
        errors += _check_flips(key, model, datasets)
    if kind == "t2i":
        errors += _check_t2i(key, model, datasets)
    if kind in ("ddpm", "diffae"):
        errors += _check_unet(key, model, config)
    if kind == "ddpm":
        errors += _check_ddpm_evaluation(key, model, config)
    return errors


def _check_flips(key: str, model: dict[str, Any], datasets: dict[str, Any]) -> list[str]:
    """No forced flips on a dataset kind whose mirror images never occur: the model would learn them."""
    asymmetric = [name for name in model["datasets"] if datasets[name]["kind"] in ASYMMETRIC_KINDS]
    if model["train"]["hflip"] is True and asymmetric:
        allowed = "false" if model["kind"] == "t2i" else "false or auto"
        reason = f"mirror images of {', '.join(asymmetric)} never occur in the data"
        return [_msg(f"{key}.train.hflip", True, f"allowed: {allowed} ({reason})")]
    return []


def _check_groups(key: str, groups: int, widths: list[int], what: str) -> list[str]:
    """GroupNorm: ``groups`` must divide every channel count of ``widths`` (config ``what``)."""
    if any(width % groups for width in widths):
        return [_msg(key, groups, f"allowed: a divisor of every {what} entry ({widths})")]
    return []


def _check_unet(key: str, model: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """UNet levels, groups and image sizes, and the noise schedule, of a ddpm or diffae."""
    errors = []
    unet = model["unet"]
    widths, attention = unet["block_out_channels"], unet["attention"]
    if len(attention) != len(widths):
        errors.append(
            _msg(f"{key}.unet.attention", attention, f"allowed: one boolean per level ({len(widths)} levels)")
        )
    errors += _check_groups(
        f"{key}.unet.norm_num_groups", unet["norm_num_groups"], widths, "unet.block_out_channels"
    )
    # diffusers gives a block width // attention_head_dim heads; the middle block always attends
    attending = [w for w, a in zip(widths, attention, strict=False) if a] + [widths[-1]]
    if unet["attention_head_dim"] > min(attending):
        allowed = f"allowed: at most {min(attending)}, the narrowest attention level's width (no heads else)"
        errors.append(_msg(f"{key}.unet.attention_head_dim", unet["attention_head_dim"], allowed))
    if model["kind"] == "diffae":  # the semantic encoder's GroupNorms: min(groups, width) groups
        groups = unet["norm_num_groups"]
        if any(width % min(groups, width) for width in model["encoder_widths"]):
            allowed = (
                f"allowed: every entry a multiple of min(unet.norm_num_groups, entry) = {groups} or below it"
            )
            errors.append(_msg(f"{key}.encoder_widths", model["encoder_widths"], allowed))
    for dataset_name in model["datasets"]:
        size = config["datasets"][dataset_name]["image_size"]
        if size % 2 ** (len(widths) - 1):
            errors.append(
                _msg(
                    f"{key}.unet.block_out_channels",
                    widths,
                    f"image_size {size} of {dataset_name!r} must be divisible by 2^(levels-1)",
                )
            )
    schedule = model["schedule"]
    if schedule["beta_start"] >= schedule["beta_end"]:
        errors.append(
            _msg(f"{key}.schedule.beta_start", schedule["beta_start"], "allowed: beta_start < beta_end")
        )
    if model["kind"] == "ddpm":
        steps = model["evaluation"]["sampling_steps"]
        errors += _steps_within(f"{key}.evaluation.sampling_steps", steps, key, model)
    else:
        for field in ("encode_steps", "decode_steps"):
            errors += _steps_within(f"{key}.latents.{field}", model["latents"][field], key, model, reserved=1)
    return errors


def _check_ddpm_evaluation(key: str, model: dict[str, Any], config: dict[str, Any]) -> list[str]:
    errors = []
    evaluation = model["evaluation"]
    references = [("encoder", evaluation["encoder"])] if evaluation["encoder"] else []
    references += [("regressor", name) for name in evaluation["regressors"]]
    for wanted, ref in references:
        other = config["models"].get(ref)
        field = "encoder" if wanted == "encoder" else "regressors"
        if other is None or other["kind"] != wanted:
            names = sorted(n for n, m in config["models"].items() if m["kind"] == wanted)
            errors.append(
                _msg(
                    f"{key}.evaluation.{field}",
                    ref,
                    f"allowed: {wanted} models: " + (", ".join(names) or "none"),
                )
            )
        elif wanted == "encoder" and (missing := sorted(set(model["datasets"]) - set(other["datasets"]))):
            errors.append(_msg(f"{key}.evaluation.{field}", ref, f"{ref!r} must be trained on {missing} too"))
        elif not set(model["datasets"]) & set(other["datasets"]):
            errors.append(
                _msg(
                    f"{key}.evaluation.{field}",
                    ref,
                    f"a regressor trained on at least one of {model['datasets']}",
                )
            )
    return errors


def semantic_errors(config: dict[str, Any], base_dir: Path) -> list[str]:
    """Every cross-reference, file and architecture problem of a schema-valid config."""
    errors = []
    for name, dataset in config["datasets"].items():
        errors += _check_dataset(name, dataset, base_dir)
    for name, model in config["models"].items():
        errors += _check_model(name, model, config, base_dir)
    if errors:
        return errors
    for name, entry in config["distill"].items():
        errors += _check_distill(name, entry, config)
    if errors:
        return errors
    for name, entry in config["explanations"].items():
        errors += _check_explanation(name, entry, config, base_dir)
    for name, entry in config["attributions"].items():
        errors += _check_attribution(name, entry, config)
    for name, entry in config["ablations"].items():
        errors += _check_ablation(name, entry, config)
    for name, entry in config["interpretable"].items():
        errors += _check_interpretable(name, entry, config)
    for name, entry in config["variance"].items():
        errors += _check_variance(name, entry, config)
    return errors + _check_counterfactual_metrics(config, base_dir)


def _model_reference(
    key: str, name: str | None, kind: str, datasets: list[str], config: dict[str, Any]
) -> list[str]:
    """``name`` must be a ``kind`` model trained on every one of ``datasets``."""
    model = config["models"].get(name)
    if model is None or model["kind"] != kind:
        names = sorted(n for n, m in config["models"].items() if m["kind"] == kind)
        return [_msg(key, name, f"allowed: {kind} models: " + (", ".join(names) or "none"))]
    missing = sorted(set(datasets) - set(model["datasets"]))
    if missing:
        return [_msg(key, name, f"{name!r} must be trained on {missing} too")]
    return []


RESERVED_NAMES = ("attributions", "ablations", "models", "cache")  # folders beside explanations


def _datasets_of(key: str, entry: dict[str, Any], model_key: str, config: dict[str, Any]) -> list[str]:
    """Fill ``entry['datasets']`` (default: the model's) and check they are the model's."""
    model = config["models"][entry[model_key]]
    entry.setdefault("datasets", list(model["datasets"]))
    allowed = f"allowed: datasets the {model['kind']} {entry[model_key]!r} is trained on: {model['datasets']}"
    return [_msg(f"{key}.datasets", d, allowed) for d in entry["datasets"] if d not in model["datasets"]]


def _check_freemcg_steps(key: str, params: dict[str, Any], ddpm: dict[str, Any]) -> list[str]:
    """DDIM steps must be distinct timesteps between t_start·T and 0."""
    timesteps = ddpm["schedule"]["num_train_timesteps"]
    start = min(timesteps - 1, round(params["t_start"] * timesteps))  # as methods.freemcg starts
    if params["mode"] == "ddim" and params["steps"] > start + 1:
        allowed = f"allowed: 1..{start + 1} (min(t_start·T, T - 1) + 1)"
        return [_msg(f"{key}.params.steps", params["steps"], allowed)]
    return []


def _check_gcd(key: str, params: dict[str, Any], diffae: dict[str, Any]) -> list[str]:
    """Decode steps within the schedule; the CE direction among the kept h-directions (at most
    h_directions, and at most latent_dim: the Hessian of the proxy has that many eigenvectors)."""
    errors = []
    timesteps = diffae["schedule"]["num_train_timesteps"]
    if params["decode_steps"] >= timesteps:
        allowed = f"allowed: 1..{timesteps - 1}"
        errors.append(_msg(f"{key}.params.decode_steps", params["decode_steps"], allowed))
    kept = min(params["h_directions"], diffae["latent_dim"])  # a Hessian of z_sem has latent_dim eigenvectors
    if params["direction"] != "g" and int(params["direction"][1:]) > kept:
        bound = "h_directions" if kept == params["h_directions"] else "the DiffAE's latent_dim"
        allowed = f"allowed: g or h1..h{kept} ({bound})"
        errors.append(_msg(f"{key}.params.direction", params["direction"], allowed))
    return errors


def _check_explanation(name: str, entry: dict[str, Any], config: dict[str, Any], base_dir: Path) -> list[str]:
    key = f"explanations.{name}"
    if name in RESERVED_NAMES:
        return [_msg("explanations", name, f"allowed: any name but {', '.join(RESERVED_NAMES)}")]
    generator = GENERATORS.get(entry["method"], "ddpm")  # the generative model's key and kind
    model = config["models"].get(entry[generator])
    if model is None or model["kind"] != generator:
        return _model_reference(f"{key}.{generator}", entry[generator], generator, [], config)
    errors = _datasets_of(key, entry, generator, config)
    if errors:
        return errors
    errors += _model_reference(
        f"{key}.classifier", entry["classifier"], "classifier", entry["datasets"], config
    )
    if entry["method"] == "time":
        errors += _check_time(key, entry, config)
    errors += _check_params(key, entry["method"], entry["params"], f"models.{entry[generator]}", model)
    perceptual = entry["perceptual"]
    if entry["method"] == "dime" and perceptual["network"] == "encoder":
        errors += _model_reference(
            f"{key}.perceptual.encoder", perceptual["encoder"], "encoder", entry["datasets"], config
        )
    if entry["method"] == "dime" and perceptual["network"] == "vgg":
        weights = perceptual["weights"]
        if not weights or not resolve(weights, base_dir).is_file():
            errors.append(
                _msg(f"{key}.perceptual.weights", weights, "allowed: an existing VGG state-dict file")
            )
    return errors


def _check_attribution(name: str, entry: dict[str, Any], config: dict[str, Any]) -> list[str]:
    key = f"attributions.{name}"
    model_key = "ddpm" if entry["method"] == "freemcg" else "classifier"
    kind = "ddpm" if model_key == "ddpm" else "classifier"
    model = config["models"].get(entry[model_key])
    if model is None or model["kind"] != kind:
        return _model_reference(f"{key}.{model_key}", entry[model_key], kind, [], config)
    if entry["method"] == "hit" and model.get("arch") != "hit":
        return [
            _msg(
                f"{key}.classifier", entry["classifier"], "allowed for method hit: a classifier with arch hit"
            )
        ]
    if entry["method"] == "attention_rollout" and not _is_transformer(model.get("arch", "simple_cnn")):
        allowed = (
            "allowed for method attention_rollout: a classifier with arch hit or a timm ViT (vit_*, deit*)"
        )
        return [_msg(f"{key}.classifier", entry["classifier"], allowed)]
    errors = _datasets_of(key, entry, model_key, config)
    if errors:
        return errors
    errors = _check_pixel_sizes(key, entry, config)
    if model_key == "classifier":
        return errors
    return errors + _model_reference(
        f"{key}.classifier", entry["classifier"], "classifier", entry["datasets"], config
    )


PIXEL_PARAMS = ("window", "stride", "cell")  # occlusion's square and stride, KernelSHAP's superpixel


def _check_pixel_sizes(key: str, entry: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Sizes in pixels fit the smallest image of the entry's datasets (Captum refuses a window
    larger than the image only when the job runs)."""
    smallest = min(config["datasets"][name]["image_size"] for name in entry["datasets"])
    return [
        _msg(f"{key}.params.{name}", entry["params"][name], f"allowed: at most the image size {smallest}")
        for name in PIXEL_PARAMS
        if entry["params"].get(name) is not None and entry["params"][name] > smallest
    ]


def _is_transformer(arch: str) -> bool:
    """Whether attention rollout can read the architecture's attention: HiT, or timm's
    VisionTransformer family (its blocks' ``attn``)."""
    return arch == "hit" or arch.startswith(("vit_", "deit"))


GENERATORS = {"gcd": "diffae", "time": "t2i"}  # methods whose generative model is not a ddpm


def _check_time(key: str, entry: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The tokens come from a distill entry of the same t2i model and classifier; τ < steps."""
    distill = config["distill"].get(entry["tokens"])
    if distill is None:
        return [
            _msg(
                f"{key}.tokens",
                entry["tokens"],
                "allowed: distill entries: " + (", ".join(config["distill"]) or "none"),
            )
        ]
    errors = [
        _msg(f"{key}.tokens", entry["tokens"], f"allowed: a distill entry with {field} {entry[field]!r}")
        for field in ("t2i", "classifier")
        if distill[field] != entry[field]
    ]
    missing = sorted(set(entry["datasets"]) - set(distill["datasets"]))
    if missing:
        errors.append(
            _msg(f"{key}.tokens", entry["tokens"], f"allowed: a distill entry run on {missing} too")
        )
    return errors


def _check_params(
    key: str, method: str, params: dict[str, Any], model_key: str, model: dict[str, Any]
) -> list[str]:
    """The method's params agree with each other and with its generative ``model``'s schedule."""
    if method == "gcd":
        return _check_gcd(key, params, model)
    if method == "freemcg":
        return _check_freemcg_steps(key, params, model)
    errors = _steps_within(f"{key}.params.steps", params["steps"], model_key, model)
    if method == "time":
        return errors + _check_time_params(key, params)
    if params["tau"] > params["steps"]:
        errors.append(_msg(f"{key}.params.tau", params["tau"], f"allowed: 1..steps ({params['steps']})"))
    return errors


def _check_time_params(key: str, params: dict[str, Any]) -> list[str]:
    """τ and w set together or not at all; every attempt's τ a whole number below ``steps``, its w >= 0."""
    errors = []
    steps = params["steps"]
    if (params["tau"] is None) != (params["w"] is None):
        errors.append(
            _msg(f"{key}.params.tau", params["tau"], "allowed: set together with params.w, or neither")
        )
    attempts = params["attempts"] if params["tau"] is None else [[params["tau"], params["w"]]]
    for tau, w in attempts:
        if not 1 <= tau < steps or tau != int(tau):
            errors.append(
                _msg(f"{key}.params.attempts", tau, f"allowed: whole tau in 1..steps-1 ({steps - 1})")
            )
        if w is not None and w < 0:  # a negative scale guides away from the target prompt
            errors.append(_msg(f"{key}.params.attempts", [tau, w], "allowed: guidance scale w >= 0"))
    return errors


def _check_distill(name: str, entry: dict[str, Any], config: dict[str, Any]) -> list[str]:
    key = f"distill.{name}"
    for concept in ("context", "classes"):
        low, high = entry[concept]["timesteps"]
        if low >= high:
            return [_msg(f"{key}.{concept}.timesteps", [low, high], "allowed: [a, b] with 0 <= a < b <= 1")]
    model = config["models"].get(entry["t2i"])
    if model is None or model["kind"] != "t2i":
        return _model_reference(f"{key}.t2i", entry["t2i"], "t2i", [], config)
    errors = _datasets_of(key, entry, "t2i", config)
    if errors:
        return errors
    return _model_reference(f"{key}.classifier", entry["classifier"], "classifier", entry["datasets"], config)


def _check_t2i(key: str, model: dict[str, Any], datasets: dict[str, Any]) -> list[str]:
    """Ellipse captions name orientation and position, which a flip changes; one
    cross-attention flag per level."""
    errors = []
    ellipses = [name for name in model["datasets"] if datasets[name]["kind"] == "ellipses"]
    if model["train"]["hflip"] and ellipses:
        errors.append(
            _msg(
                f"{key}.train.hflip",
                True,
                f"allowed: false (a flip changes what the captions of {', '.join(ellipses)} say)",
            )
        )
    errors += _steps_within(f"{key}.check.steps", model["check"]["steps"], key, model)
    network = model["network"]
    errors += _check_groups(
        f"{key}.network.norm_num_groups", network["norm_num_groups"], network["block_out_channels"],
        "network.block_out_channels",
    )  # fmt: skip
    if network["text_width"] % network["text_heads"]:
        allowed = f"allowed: a divisor of network.text_width ({network['text_width']})"
        errors.append(_msg(f"{key}.network.text_heads", network["text_heads"], allowed))
    if len(network["cross_attention"]) != len(network["block_out_channels"]):
        errors.append(
            _msg(
                f"{key}.network.cross_attention",
                network["cross_attention"],
                "allowed: one flag per block_out_channels level",
            )
        )
    return errors


def _check_interpretable(name: str, entry: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The model is a HiT classifier; the baseline a classifier trained on the same datasets."""
    key = f"interpretable.{name}"
    model = config["models"].get(entry["model"])
    if model is None or model["kind"] != "classifier" or model.get("arch") != "hit":
        hits = sorted(
            n for n, m in config["models"].items() if m["kind"] == "classifier" and m.get("arch") == "hit"
        )
        return [
            _msg(
                f"{key}.model",
                entry["model"],
                "allowed: classifiers with arch hit: " + (", ".join(hits) or "none"),
            )
        ]
    errors = _datasets_of(key, entry, "model", config)
    if errors or entry["baseline"] is None:
        return errors
    return _model_reference(f"{key}.baseline", entry["baseline"], "classifier", entry["datasets"], config)


def _check_ablation(name: str, entry: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The explanation exists and every varied value is a valid value of its parameter."""
    from jsonschema import Draft202012Validator

    from diffxai.config.load import load_schema

    key = f"ablations.{name}"
    explanation = config["explanations"].get(entry["explanation"])
    if explanation is None:
        names = ", ".join(sorted(config["explanations"])) or "none"
        return [_msg(f"{key}.explanation", entry["explanation"], f"allowed: explanations: {names}")]
    if explanation["method"] == "gcd":  # its CEs need a directions run per setting
        others = sorted(n for n, e in config["explanations"].items() if e["method"] != "gcd")
        names = ", ".join(others) or "none"
        return [_msg(f"{key}.explanation", entry["explanation"], f"allowed: non-gcd explanations: {names}")]
    schema = load_schema()
    params_schema = {"$defs": schema["$defs"], **schema["$defs"][f"{explanation['method']}_params"]}
    allowed = sorted(params_schema["properties"])
    unknown = [param for param in entry["vary"] if param not in allowed]
    if unknown:
        return [
            _msg(f"{key}.vary", param, f"allowed: parameters of {explanation['method']}: {allowed}")
            for param in unknown
        ]
    try:
        settings = ablation_settings(entry)
    except ValueError as error:  # labels name output folders: they must differ
        return [_msg(f"{key}.vary", entry["vary"], f"allowed: values whose labels differ ({error})")]
    unsafe = [label for label in settings if any(c == "," or c.isspace() for c in label)]
    if unsafe:  # a cluster job's --target-jobs splits its wildcards on commas
        return [_msg(f"{key}.vary", unsafe[0], "allowed: values without commas or spaces")]
    errors = []
    generator = GENERATORS.get(explanation["method"], "ddpm")
    model = config["models"].get(explanation[generator])  # a bad reference: the explanation's error
    for label, setting in settings.items():
        trial = {**explanation["params"], **entry["params"], **setting}
        schema_errors = [
            _msg(f"{key}.vary", label, error.message)
            for error in Draft202012Validator(params_schema).iter_errors(trial)
        ]
        if schema_errors or model is None or model["kind"] != generator:
            errors += schema_errors
        else:
            errors += _check_params(
                f"{key}.vary[{label}]",
                explanation["method"],
                trial,
                f"models.{explanation[generator]}",
                model,
            )
    return errors


def _check_counterfactual_metrics(config: dict[str, Any], base_dir: Path) -> list[str]:
    key, settings = "counterfactual_metrics", config["counterfactual_metrics"]
    explained = sorted({d for entry in config["explanations"].values() for d in entry.get("datasets", [])})
    if not config["explanations"]:
        return []
    errors = _model_reference(f"{key}.encoder", settings["encoder"], "encoder", explained, config)
    if settings["oracle"] is not None:
        errors += _model_reference(f"{key}.oracle", settings["oracle"], "oracle", [], config)
    for regressor in settings["regressors"]:
        errors += _model_reference(f"{key}.regressors", regressor, "regressor", [], config)
    for field in ("inception_weights", "lpips_weights"):
        path = settings[field]
        if path and not resolve(path, base_dir).is_file():
            errors.append(_msg(f"{key}.{field}", path, "allowed: null or an existing file"))
    return errors


def _check_variance_feature(
    key: str, feature: dict[str, Any], datasets: list[str], config: dict[str, Any]
) -> list[str]:
    """The regressor is trained on the analysis's datasets; the attribute or mask exists in each."""
    if feature["kind"] == "continuous":
        return _model_reference(f"{key}.regressor", feature["regressor"], "regressor", datasets, config)
    field, names_of = ("attribute", dataset_attribute_names)
    if feature["kind"] == "region":
        field, names_of = ("mask", dataset_mask_names)
    errors = []
    for dataset in datasets:
        names = names_of(config["datasets"][dataset])
        if names is not None and feature[field] not in names:
            allowed = f"allowed: {field}s of dataset {dataset!r}: " + (", ".join(names) or "none")
            errors.append(_msg(f"{key}.{field}", feature[field], allowed))
    return errors


def _check_variance(name: str, entry: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """A classifier; a DDPM (and the coverage encoder) when a feature is sampled; each feature's sources."""
    key = f"variance.{name}"
    errors = _model_reference(f"{key}.classifier", entry["classifier"], "classifier", [], config)
    if errors:
        return errors
    errors = _datasets_of(key, entry, "classifier", config)
    if errors:
        return errors
    if any(feature["kind"] != "discrete" for feature in entry["features"].values()):
        errors += _model_reference(f"{key}.ddpm", entry["ddpm"], "ddpm", entry["datasets"], config)
        if not errors:
            steps = entry["sampling"]["steps"]
            errors += _steps_within(
                f"{key}.sampling.steps", steps, f"models.{entry['ddpm']}", config["models"][entry["ddpm"]]
            )
        if entry["encoder"] is not None:
            errors += _model_reference(
                f"{key}.encoder", entry["encoder"], "encoder", entry["datasets"], config
            )
        generated = [config["datasets"][name] for name in entry["datasets"]]
        test_sizes = [round(d["n_images"] * d["split"]["test"]) for d in generated if "n_images" in d]
        if entry["encoder"] is not None and test_sizes and max(entry["coverage_k"]) >= min(test_sizes):
            smallest = min(test_sizes)
            allowed = f"allowed: below the smallest test split ({smallest} images): the k-NN radii need k + 1"
            errors.append(_msg(f"{key}.coverage_k", entry["coverage_k"], allowed))
        per_value = entry["sampling"]["samples_per_value"]
        if entry["min_accepted"] > per_value:
            allowed = (
                f"allowed: at most sampling.samples_per_value ({per_value}): no value could enter the scores"
            )
            errors.append(_msg(f"{key}.min_accepted", entry["min_accepted"], allowed))
    for feature_name, feature in entry["features"].items():
        errors += _check_variance_feature(
            f"{key}.features.{feature_name}", feature, entry["datasets"], config
        )
    return errors
