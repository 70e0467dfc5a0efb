# Helpers shared by the rule files (validated config, paths, wildcard sets, code hashes).
import os
import sys

from diffxai.config.ablation_design import ablation_settings as settings_of
from diffxai.config.load import ConfigError, validate_config
from diffxai.data.kinds import dataset_module, resolve_flips, source_files
from diffxai.seeds import derive_seed
from diffxai.jobs.persistence import PERSISTENCE_SETTINGS
from diffxai.methods.gcd_params import direction_params
from diffxai.methods.registry import method_modules
from diffxai.paths import resolve
from diffxai.provenance import source_hash

try:
    _validated = validate_config(config, os.getcwd())
except ConfigError as error:
    sys.exit(f"Invalid configuration: {error}")
config.clear()
config.update(_validated)

R = config["results"]
DEVICE = config["device"]
GPU = 0 if DEVICE == "cpu" else 1
NEVER = "(?!x)x"  # matches no wildcard value: a rule for a kind with no models


def names_of(mapping, **conditions):
    """Regex alternation of the keys whose entries match every condition."""
    names = [
        name
        for name, entry in mapping.items()
        if all(entry[k] in v for k, v in conditions.items())
    ]
    return "|".join(sorted(names)) or NEVER


SUPERVISED = names_of(config["models"], kind=("classifier", "regressor", "oracle"))
ENCODERS = names_of(config["models"], kind=("encoder",))
DDPMS = names_of(config["models"], kind=("ddpm",))
DIFFAES = names_of(config["models"], kind=("diffae",))
T2IS = names_of(config["models"], kind=("t2i",))
DISTILLS = "|".join(sorted(config["distill"])) or NEVER
EXPLANATIONS = "|".join(sorted(config["explanations"])) or NEVER
ATTRIBUTIONS = "|".join(sorted(config["attributions"])) or NEVER
ABLATIONS = "|".join(sorted(config["ablations"])) or NEVER
INTERPRETABLE = "|".join(sorted(config["interpretable"])) or NEVER
VARIANCES = "|".join(sorted(config["variance"])) or NEVER


def model_dir(dataset, name):
    return f"{R}/{dataset}/models/{name}"


def model_files(dataset, name):
    """The weights and config.json of a trained model (inputs of its consumers)."""
    directory = model_dir(dataset, name)
    return [f"{directory}/model.safetensors", f"{directory}/config.json"]


def local_files(**paths):
    """The local files that config values name, those that are set (a checkpoint, network
    weights), as named inputs: replacing one re-runs the jobs that read it."""
    return {name: str(resolve(path, ".")) for name, path in paths.items() if path}


def training_inputs(wildcards):
    """A model's data and, where it loads one instead of training, its checkpoint."""
    return {
        "data": f"{R}/{wildcards.dataset}/data.zarr",
        **local_files(checkpoint=config["models"][wildcards.name].get("checkpoint")),
    }


def lpips_inputs():
    return local_files(lpips_weights=config["counterfactual_metrics"]["lpips_weights"])


def model_cfg(wildcards):
    """A model's config minus its dataset list: adding a dataset re-trains nothing else."""
    return {
        k: v for k, v in config["models"][wildcards.name].items() if k != "datasets"
    }


def diffusion_cfg(wildcards, leave_out=None):
    """A diffusion model's training config on the job's dataset: minus the ``leave_out``
    section and the persistence settings (neither changes the weights; the job reads the
    latter from the config), ``train.hflip: auto`` resolved.
    """
    cfg = {k: v for k, v in model_cfg(wildcards).items() if k != leave_out}
    kind = config["datasets"][wildcards.dataset]["kind"]
    train = {k: v for k, v in cfg["train"].items() if k not in PERSISTENCE_SETTINGS}
    return {
        **cfg,
        "train": {**train, "hflip": resolve_flips(cfg["train"]["hflip"], kind)},
    }


def attribution_metric_settings(attribution):
    """The metric settings of one attribution run: its own ``absolute`` over the global one."""
    own = config["attributions"][attribution]["absolute"]
    settings = config["attribution_metrics"]
    return settings if own is None else {**settings, "absolute": own}


def job_seed(wildcards):
    return derive_seed(config["seed"], *wildcards)


def run_names(method):
    return [f"run{k}" for k in range(config["explanations"][method]["runs"])]


def explanation_targets():
    """metrics.json and shard stores of every (dataset, explanation, run); diversity.json
    with 2+ runs; GCD's summary (sources, globality of its directions, BB-LIG). The shards
    are targets so that a deleted shard is re-computed alone (the others stay cached).
    """
    targets = []
    for method, entry in config["explanations"].items():
        for dataset in entry["datasets"]:
            runs = run_names(method)
            targets += [f"{R}/{dataset}/{method}/{run}/metrics.json" for run in runs]
            targets += [
                f"{R}/{dataset}/{method}/{run}/shards/{shard}.zarr"
                for run in runs
                for shard in range(entry["shards"])
            ]
            if len(runs) > 1:
                targets.append(f"{R}/{dataset}/{method}/diversity.json")
            if entry["method"] == "gcd":
                targets.append(f"{R}/{dataset}/{method}/gcd_summary.json")
    return targets


def attribution_targets():
    """metrics.json of every (dataset, attribution)."""
    return [
        f"{R}/{dataset}/attributions/{name}/metrics.json"
        for name, entry in config["attributions"].items()
        for dataset in entry["datasets"]
    ]


def ablation_settings(name):
    """{setting wildcard: {parameter: value}} of an ablation, in table order."""
    return settings_of(config["ablations"][name])


def ablation_targets():
    """table.csv of every (dataset, ablation) on the datasets of its explanation."""
    return [
        f"{R}/{dataset}/ablations/{name}/table.csv"
        for name, entry in config["ablations"].items()
        for dataset in config["explanations"][entry["explanation"]]["datasets"]
    ]


def interpretable_attributions(analysis, dataset):
    """Attributions on a HiT analysis's HiT or baseline classifier, on ``dataset``."""
    entry = config["interpretable"][analysis]
    classifiers = {entry["model"], entry["baseline"]}
    return sorted(
        name
        for name, attribution in config["attributions"].items()
        if attribution["classifier"] in classifiers
        and dataset in attribution["datasets"]
    )


def hit_summary_inputs(wildcards):
    entry = config["interpretable"][wildcards.analysis]
    dataset = wildcards.dataset
    inputs = {
        "data": f"{R}/{dataset}/data.zarr",
        "hit": model_files(dataset, entry["model"])
        + [f"{model_dir(dataset, entry['model'])}/metrics.json"],
        "metrics": [
            f"{R}/{dataset}/attributions/{name}/metrics.json"
            for name in interpretable_attributions(wildcards.analysis, dataset)
        ],
    }
    if entry["baseline"] is not None:
        inputs["baseline"] = [
            f"{model_dir(dataset, entry['baseline'])}/metrics.json"
        ] + model_files(dataset, entry["baseline"])
    return inputs


def interpretable_targets():
    """summary.json of every (dataset, HiT analysis)."""
    return [
        f"{R}/{dataset}/interpretable/{name}/summary.json"
        for name, entry in config["interpretable"].items()
        for dataset in entry["datasets"]
    ]


def sampled_features(variance):
    """Names of the features of a variance analysis that are sampled (continuous, region)."""
    features = config["variance"][variance]["features"]
    return [name for name, feature in features.items() if feature["kind"] != "discrete"]


def variance_feature(wildcards):
    """The feature definition of a variance_sample job; ``plain`` = unconstrained samples."""
    if wildcards.feature == "plain":
        return {"kind": "plain"}
    return config["variance"][wildcards.variance]["features"][wildcards.feature]


def variance_sampling(wildcards):
    """The sampling settings a variance_sample job uses: guidance (rho) and rejection (tolerance)
    only for continuous features, so changing them re-samples nothing else."""
    sampling = config["variance"][wildcards.variance]["sampling"]
    if variance_feature(wildcards)["kind"] == "continuous":
        return sampling
    return {k: v for k, v in sampling.items() if k not in ("rho", "tolerance")}


def variance_sample_inputs(wildcards):
    entry = config["variance"][wildcards.variance]
    inputs = {
        "data": f"{R}/{wildcards.dataset}/data.zarr",
        "ddpm": model_files(wildcards.dataset, entry["ddpm"]),
    }
    feature = variance_feature(wildcards)
    if feature["kind"] == "continuous":
        inputs["regressor"] = model_files(wildcards.dataset, feature["regressor"])
    return inputs


def variance_scores_inputs(wildcards):
    """Data, classifier, the samples of every sampled feature (samples_<name>), the regressors
    of continuous features (regressor_<name>), and the coverage encoder with plain samples.
    """
    entry = config["variance"][wildcards.variance]
    dataset, folder = (
        wildcards.dataset,
        f"{R}/{wildcards.dataset}/variance/{wildcards.variance}",
    )
    inputs = {
        "data": f"{R}/{dataset}/data.zarr",
        "classifier": model_files(dataset, entry["classifier"]),
    }
    sampled = sampled_features(wildcards.variance)
    for name in sampled:
        inputs[f"samples_{name}"] = f"{folder}/{name}/samples.zarr"
    for name, feature in entry["features"].items():
        if feature["kind"] == "continuous":
            inputs[f"regressor_{name}"] = model_files(dataset, feature["regressor"])
    if sampled and entry["encoder"] is not None:
        inputs["encoder"] = model_files(dataset, entry["encoder"])
        inputs["plain"] = f"{folder}/plain/samples.zarr"
    return inputs


def variance_targets():
    """scores.json of every (dataset, variance analysis)."""
    return [
        f"{R}/{dataset}/variance/{name}/scores.json"
        for name, entry in config["variance"].items()
        for dataset in entry["datasets"]
    ]


def all_targets():
    """prepared data, metrics.json of every (dataset, model), explanation run and
    attribution, every ablation table, HiT analysis and variance analysis, and the report.
    """
    targets = [f"{R}/{dataset}/data.zarr" for dataset in config["datasets"]]
    for name, model in config["models"].items():
        targets += [f"{model_dir(d, name)}/metrics.json" for d in model["datasets"]]
    targets += explanation_targets() + attribution_targets() + ablation_targets()
    targets += interpretable_targets() + variance_targets()
    return targets + [f"{R}/report/metrics.csv", f"{R}/report/figures"]


# settings of an entry that one method alone reads (explanations: DiME's perceptual network;
# attributions: FreeMCG's particle cache): only that method's specs carry them, so changing
# one re-runs no other method's jobs
METHOD_ONLY_SETTINGS = {"dime": "perceptual", "freemcg": "cache_particles"}


def method_only_settings(entry):
    """The entry's setting that its method alone reads, if the entry has one ({} otherwise)."""
    key = METHOD_ONLY_SETTINGS.get(entry["method"])
    return {key: entry[key]} if key in entry else {}


def explanation_spec(wildcards):
    """What an explanation shard computes (its params: a change re-runs the method)."""
    entry = config["explanations"][wildcards.method]
    keys = ("method", "params", "n_images", "shards", "batch_size")
    spec = {key: entry[key] for key in keys} | method_only_settings(entry)
    if entry["method"] == "gcd":
        spec["lpips_weights"] = config["counterfactual_metrics"]["lpips_weights"]
    return spec


def dataset_code(dataset):
    """Source hash of the data job and of the one generator or adapter its dataset's kind uses."""
    return source_hash(
        "diffxai.jobs.prepare_data", dataset_module(config["datasets"][dataset]["kind"])
    )


def method_code(job_module, spec):
    """Source hash of a job module, of the one method its spec runs and of the modules that
    build that method's context (the registry imports methods by name, so an edit of one
    method re-runs that method's jobs only)."""
    return source_hash(job_module, *method_modules(spec["method"]))


def explain_inputs(wildcards):
    entry = config["explanations"][wildcards.method]
    inputs = method_inputs(wildcards.dataset, entry)
    if entry["method"] == "gcd":
        inputs["directions"] = gcd_directions_path(
            wildcards.dataset, wildcards.method, wildcards.run
        )
    return inputs


def gcd_run_seeds(wildcards):
    """The seeds of a GCD run and of the runs before it, in run order."""
    names = run_names(wildcards.method)
    runs = names[: names.index(wildcards.run) + 1]
    return [
        derive_seed(config["seed"], wildcards.dataset, wildcards.method, run)
        for run in runs
    ]


def gcd_directions_path(dataset, method, run):
    return f"{R}/{dataset}/{method}/{run}/directions.zarr"


def gcd_model_inputs(wildcards):
    """The data, black box, DiffAE and cached latents of a gcd explanation."""
    entry = config["explanations"][wildcards.method]
    return {
        "data": f"{R}/{wildcards.dataset}/data.zarr",
        "classifier": model_files(wildcards.dataset, entry["classifier"]),
        "diffae": model_files(wildcards.dataset, entry["diffae"]),
        "latents": latents_path(wildcards.dataset, entry["diffae"]),
        **lpips_inputs(),
    }


def gcd_globality_inputs(wildcards):
    """The first run's directions of a gcd explanation, its models and the regressors that
    measure what the directions change."""
    first = run_names(wildcards.method)[0]
    directions = gcd_directions_path(wildcards.dataset, wildcards.method, first)
    return (
        gcd_model_inputs(wildcards)
        | {"directions": directions}
        | cf_regressor_inputs(wildcards.dataset)
    )


def gcd_summary_inputs(wildcards):
    """Every run's directions, CEs and metrics of a gcd explanation, and its globality record."""
    runs = run_names(wildcards.method)
    folder = f"{R}/{wildcards.dataset}/{wildcards.method}"
    models = gcd_model_inputs(wildcards)
    return {
        "data": models["data"],
        "classifier": models["classifier"],
        "latents": models["latents"],
        "globality": f"{folder}/gcd_globality.json",
        "directions": [
            gcd_directions_path(wildcards.dataset, wildcards.method, run)
            for run in runs
        ],
        "stores": [f"{folder}/{run}/explanations.zarr" for run in runs],
        "metrics": [f"{folder}/{run}/metrics.json" for run in runs],
    }


def tokens_files(dataset, name):
    """The outputs of a distill entry."""
    return [
        f"{R}/{dataset}/tokens/{name}/tokens.safetensors",
        f"{R}/{dataset}/tokens/{name}/tokens.json",
    ]


def distill_inputs(wildcards):
    entry = config["distill"][wildcards.tokens]
    return {
        "data": f"{R}/{wildcards.dataset}/data.zarr",
        "t2i": model_files(wildcards.dataset, entry["t2i"]),
        "classifier": model_files(wildcards.dataset, entry["classifier"]),
    }


def latents_path(dataset, diffae):
    return f"{model_dir(dataset, diffae)}/latents.zarr"


def method_inputs(dataset, entry):
    """Data, classifier, the generative model (ddpm, or gcd's DiffAE and its latents; as
    ``ddpm``) and DiME's encoder of an explanation entry."""
    if entry["method"] == "time":
        return {
            "data": f"{R}/{dataset}/data.zarr",
            "classifier": model_files(dataset, entry["classifier"]),
            "ddpm": model_files(dataset, entry["t2i"]),
            "tokens": tokens_files(dataset, entry["tokens"]),
        }
    if entry["method"] == "gcd":
        return {
            "data": f"{R}/{dataset}/data.zarr",
            "classifier": model_files(dataset, entry["classifier"]),
            "ddpm": model_files(dataset, entry["diffae"]),
            "latents": latents_path(dataset, entry["diffae"]),
            **lpips_inputs(),
        }
    inputs = {
        "data": f"{R}/{dataset}/data.zarr",
        "classifier": model_files(dataset, entry["classifier"]),
        "ddpm": model_files(dataset, entry["ddpm"]),
    }
    perceptual = entry["perceptual"]
    if entry["method"] == "dime" and perceptual["network"] == "encoder":
        inputs["encoder"] = model_files(dataset, perceptual["encoder"])
    if entry["method"] == "dime" and perceptual["network"] == "vgg":
        inputs |= local_files(perceptual_weights=perceptual["weights"])
    return inputs


def ablation_inputs(wildcards):
    """The ablated explanation's inputs, plus the FID encoder (metric_encoder)."""
    entry = config["explanations"][
        config["ablations"][wildcards.ablation]["explanation"]
    ]
    inputs = method_inputs(wildcards.dataset, entry)
    encoder = config["counterfactual_metrics"]["encoder"]
    inputs["metric_encoder"] = model_files(wildcards.dataset, encoder)
    return inputs


def ablation_spec(wildcards):
    """The ablated explanation's spec with the ablation's n_images."""
    ablation = config["ablations"][wildcards.ablation]
    entry = config["explanations"][ablation["explanation"]]
    return {
        "method": entry["method"],
        "batch_size": entry["batch_size"],
        **method_only_settings(entry),
        "params": {**entry["params"], **ablation["params"]},
        "n_images": ablation["n_images"],
    }


def attribution_inputs(wildcards):
    entry = config["attributions"][wildcards.attribution]
    inputs = {
        "data": f"{R}/{wildcards.dataset}/data.zarr",
        "classifier": model_files(wildcards.dataset, entry["classifier"]),
    }
    if entry["method"] == "freemcg":
        inputs["ddpm"] = model_files(wildcards.dataset, entry["ddpm"])
    return inputs


def attribution_spec(wildcards):
    """What a maps job computes (a change re-runs it)."""
    entry = config["attributions"][wildcards.attribution]
    keys = ("method", "params", "n_images", "batch_size")
    return {key: entry[key] for key in keys} | method_only_settings(entry)


def cf_metrics_inputs(wildcards):
    entry = config["explanations"][wildcards.method]
    settings = config["counterfactual_metrics"]
    dataset = wildcards.dataset
    inputs = {
        "store": f"{R}/{dataset}/{wildcards.method}/{wildcards.run}/explanations.zarr",
        "data": f"{R}/{dataset}/data.zarr",
        "classifier": model_files(dataset, entry["classifier"]),
        "encoder": model_files(dataset, settings["encoder"]),
    }
    oracle = settings["oracle"]
    if oracle and dataset in config["models"][oracle]["datasets"]:
        inputs["oracle"] = model_files(dataset, oracle)
    inputs |= local_files(
        lpips_weights=settings["lpips_weights"],
        inception_weights=settings["inception_weights"],
    )
    return inputs | cf_regressor_inputs(dataset)


def cf_regressor_inputs(dataset):
    """regressor_<name>: the files of each counterfactual-metrics regressor trained on ``dataset``
    (they measure what CEs change)."""
    return {
        f"regressor_{regressor}": model_files(dataset, regressor)
        for regressor in config["counterfactual_metrics"]["regressors"]
        if dataset in config["models"][regressor]["datasets"]
    }


def ddpm_evaluation_inputs(wildcards):
    evaluation = model_cfg(wildcards)["evaluation"]
    inputs = {
        "data": f"{R}/{wildcards.dataset}/data.zarr",
        "ddpm": model_files(wildcards.dataset, wildcards.name),
    }
    if evaluation["encoder"]:
        inputs["encoder"] = model_files(wildcards.dataset, evaluation["encoder"])
    for regressor in evaluation["regressors"]:
        # each regressor measures the samples of the datasets it was trained on
        if wildcards.dataset in config["models"][regressor]["datasets"]:
            inputs[f"regressor_{regressor}"] = model_files(wildcards.dataset, regressor)
    return inputs


def report_entries():
    """Every metrics artifact of the run, described for the aggregate job."""
    entries = []
    for name, model in config["models"].items():
        entries += [
            {
                "path": f"{model_dir(d, name)}/metrics.json",
                "kind": "model",
                "dataset": d,
                "classifier": None,
                "method": name,
                "setting": "model",
            }
            for d in model["datasets"]
        ]
    for method, entry in config["explanations"].items():
        for dataset in entry["datasets"]:
            entries += [
                {
                    "path": f"{R}/{dataset}/{method}/{run}/metrics.json",
                    "kind": "explanation",
                    "dataset": dataset,
                    "classifier": entry["classifier"],
                    "method": method,
                    "setting": run,
                }
                for run in run_names(method)
            ]
            if len(run_names(method)) > 1:  # sigma_L, a column of the method's row
                entries.append(
                    {
                        "path": f"{R}/{dataset}/{method}/diversity.json",
                        "kind": "diversity",
                        "dataset": dataset,
                        "classifier": entry["classifier"],
                        "method": method,
                        "setting": "diversity",
                    }
                )
            if entry["method"] == "gcd":
                entries.append(
                    {
                        "path": f"{R}/{dataset}/{method}/gcd_summary.json",
                        "kind": "gcd_summary",
                        "dataset": dataset,
                        "classifier": entry["classifier"],
                        "method": method,
                        "setting": "summary",
                    }
                )
    for name, entry in config["attributions"].items():
        entries += [
            {
                "path": f"{R}/{dataset}/attributions/{name}/metrics.json",
                "kind": "attribution",
                "dataset": dataset,
                "classifier": entry["classifier"],
                "method": name,
                "setting": "maps",
            }
            for dataset in entry["datasets"]
        ]
    for name, entry in config["ablations"].items():
        explanation = config["explanations"][entry["explanation"]]
        entries += [
            {
                "path": f"{R}/{dataset}/ablations/{name}/table.csv",
                "kind": "ablation",
                "dataset": dataset,
                "classifier": explanation["classifier"],
                "method": name,
                "setting": None,
            }
            for dataset in explanation["datasets"]
        ]
    for name, entry in config["interpretable"].items():
        entries += [
            {
                "path": f"{R}/{dataset}/interpretable/{name}/summary.json",
                "kind": "hit_summary",
                "dataset": dataset,
                "classifier": entry["model"],
                "method": name,
                "setting": "summary",
            }
            for dataset in entry["datasets"]
        ]
    for name, entry in config["variance"].items():
        entries += [
            {
                "path": f"{R}/{dataset}/variance/{name}/scores.json",
                "kind": "variance",
                "dataset": dataset,
                "classifier": entry["classifier"],
                "method": name,
                "setting": None,
            }
            for dataset in entry["datasets"]
        ]
    return entries


def label_factors():
    """{dataset: the factor its label thresholds (ellipses), None where the label is no factor}."""
    return {
        name: (
            dataset["ellipses"]["label"]["factor"]
            if dataset["kind"] == "ellipses"
            else None
        )
        for name, dataset in config["datasets"].items()
    }


def figure_entries():
    """The stores the report draws: run0 of every explanation, every attribution's maps."""
    entries = [
        {
            "kind": "explanation",
            "dataset": dataset,
            "method": method,
            "path": f"{R}/{dataset}/{method}/run0/explanations.zarr",
        }
        for method, entry in config["explanations"].items()
        for dataset in entry["datasets"]
    ]
    entries += [
        {
            "kind": "attribution",
            "dataset": dataset,
            "method": name,
            "path": f"{R}/{dataset}/attributions/{name}/maps.zarr",
        }
        for name, entry in config["attributions"].items()
        for dataset in entry["datasets"]
    ]
    return entries


def variance_curves():
    """{figure name in the report: local_scores.png of a variance analysis}."""
    return {
        f"{dataset}_variance_{name}_local_scores.png": f"{R}/{dataset}/variance/{name}/local_scores.png"
        for name, entry in config["variance"].items()
        for dataset in entry["datasets"]
    }
