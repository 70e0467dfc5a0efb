"""Jobs called directly (no Snakemake): a user's checkpoint replaces training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffxai.data.prepare import build_dataset
from diffxai.data.prepared import write_prepared
from diffxai.jobs import train_supervised, train_t2i
from diffxai.jobs.model_job import ModelJob
from diffxai.models.io import build_module, load_model
from diffxai.training.supervised import to_m11


def test_a_text_to_image_model_trains_on_rgb_attribute_captions(tmp_path, tiny_config):
    """The elongation prompt check is for ellipse captions; attribute data (RGB) trains without it."""
    store = tmp_path / "data.zarr"
    write_prepared(store, build_dataset(tiny_config["datasets"]["attributes"]), attrs={})
    cfg = tiny_config["models"]["t2i"]
    cfg = {**cfg, "network": {**cfg["network"], "max_length": 32}}  # attribute captions are longer
    job = ModelJob(store, tmp_path / "t2i", "t2i", "attributes", cfg, 0, torch.device("cpu"))
    train_t2i.run(job, tmp_path / "cache")
    model, _ = load_model(tmp_path / "t2i")
    assert model.unet.config.in_channels == 3
    metrics = json.loads((tmp_path / "t2i" / "metrics.json").read_text())
    assert "prompt_check" not in metrics and metrics["example_captions"][0].startswith("a picture")


def test_a_user_checkpoint_is_evaluated_instead_of_trained(tmp_path, tiny_config, ellipses_store):
    model_cfg = tiny_config["models"]["classifier"]
    spec = train_supervised.model_spec("classifier", model_cfg, train_supervised.PreparedData(ellipses_store))
    torch.manual_seed(3)
    network = build_module(spec).network
    torch.save(network.state_dict(), tmp_path / "user.pt")
    cfg = {**model_cfg, "checkpoint": "user.pt"}
    job = ModelJob(
        ellipses_store,
        tmp_path / "out",
        "classifier",
        "ellipses",
        cfg,
        0,
        torch.device("cpu"),
        base_dir=tmp_path,
    )
    metrics = train_supervised.run(job)
    assert metrics["training"] == {}
    loaded, info = load_model(tmp_path / "out")
    for name, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[name], value)
    assert info["provenance"]["source"] == "user.pt"
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["source"] == "user.pt"
    assert 0 <= saved["test"]["accuracy"] <= 1


def test_a_trained_regressor_predicts_in_the_factor_units(tmp_path, tiny_config, ellipses_store):
    cfg = tiny_config["models"]["regressor_area"]
    train_supervised.run(
        ModelJob(ellipses_store, tmp_path, "regressor_area", "ellipses", cfg, 0, torch.device("cpu"))
    )
    regressor, _ = load_model(tmp_path)
    data = train_supervised.PreparedData(ellipses_store)
    images = torch.from_numpy(data.array("images")[:64]).float() / 127.5 - 1
    with torch.no_grad():
        predicted = regressor(images).numpy()
    # even after two epochs the predictions live on the area scale (pixels), not in standard units
    assert abs(np.mean(predicted) - np.mean(data.factor("area"))) < 3 * np.std(data.factor("area"))
    assert np.mean(predicted) > 5


def test_ddpm_resume_checkpoint_changes_with_training_settings_seed_and_code_not_evaluation(
    tiny_config, ellipses_store, tmp_path
):
    """A finished checkpoint is reloaded by the same run only: another seed, training setting or
    training job's code gets a fresh one (else it would write back the old weights)."""
    from diffxai.jobs.model_job import ModelJob
    from diffxai.jobs.train_ddpm import MODULES, resume_checkpoint

    cfg = tiny_config["models"]["ddpm"]

    def path(seed: int = 0, modules: list[str] = MODULES, **changes):
        job = ModelJob(
            ellipses_store, tmp_path, "ddpm", "ellipses", {**cfg, **changes}, seed, torch.device("cpu")
        )
        return resume_checkpoint("cache", job, modules)

    same = path()
    assert path(evaluation={**cfg["evaluation"], "samples": 3}) == same
    assert path(train={**cfg["train"], "checkpoint_every": 3}) == same  # saved more often, same run
    assert path(train={**cfg["train"], "lr": 0.01}) != same
    assert path(seed=1) != same
    assert path(modules=["diffxai.jobs.train_diffae"]) != same


def test_a_user_diffae_checkpoint_is_loaded_and_encoded(tmp_path, tiny_config, ellipses_store):
    """``checkpoint:`` (a safetensors file of the configured architecture) replaces
    training; encode_diffae then writes the codes of the first test images and the
    encode-decode error."""
    from safetensors.torch import save_file

    from diffxai.jobs import encode_diffae, train_diffae
    from diffxai.models.diffae import build_diffae
    from diffxai.store import open_store

    cfg = {k: v for k, v in tiny_config["models"]["diffae"].items() if k not in ("datasets", "latents")}
    torch.manual_seed(4)
    model, _ = build_diffae(cfg, 1, 16)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "user.safetensors")
    job = ModelJob(
        ellipses_store, tmp_path / "diffae", "diffae", "ellipses", {**cfg, "checkpoint": "user.safetensors"},
        0, torch.device("cpu"), base_dir=tmp_path,
    )  # fmt: skip
    info = train_diffae.run(job, tmp_path / "cache")
    assert info["training"] == {} and not (tmp_path / "cache").exists()
    loaded, saved = load_model(tmp_path / "diffae")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    assert saved["provenance"]["source"] == "user.safetensors" and saved["latent_dim"] == 8
    latents_cfg = tiny_config["models"]["diffae"]["latents"]
    metrics = encode_diffae.run(
        ellipses_store, tmp_path / "diffae", tmp_path / "latents.zarr", tmp_path / "metrics.json",
        latents_cfg, None, 0, torch.device("cpu"),
    )  # fmt: skip
    store = open_store(tmp_path / "latents.zarr", kind="latents")
    data = train_supervised.PreparedData(ellipses_store)
    assert np.array_equal(store.read("sample_ids"), data.indices("test")[: latents_cfg["n_images"]])
    assert store.read("z_t").shape == (latents_cfg["n_images"], 1, 16, 16)
    assert store.attrs["encode_steps"] == latents_cfg["encode_steps"]
    assert metrics["reconstruction"]["same_steps"]["decode_steps"] == latents_cfg["encode_steps"]
    assert json.loads((tmp_path / "metrics.json").read_text())["n_images"] == latents_cfg["n_images"]
    # batches of 3 (the last one short, the reconstruction images spanning two): the same
    # codes, and the error of a direct decode of the first reconstruction_images
    small = {**latents_cfg, "batch_size": 3}
    batched = encode_diffae.run(
        ellipses_store, tmp_path / "diffae", tmp_path / "b.zarr", tmp_path / "b.json", small, None, 0,
        torch.device("cpu"),
    )  # fmt: skip
    again = open_store(tmp_path / "b.zarr", kind="latents")
    for name in ("sample_ids", "z_sem", "z_t", "z_mean", "z_std"):
        np.testing.assert_allclose(again.read(name), store.read(name), rtol=1e-5, atol=1e-5)
    codec = encode_diffae.load_codec(tmp_path / "diffae", torch.device("cpu"))
    n_rec = latents_cfg["reconstruction_images"]
    images = to_m11(torch.from_numpy(data.array("images")[data.indices("test")[:n_rec]]))
    steps = latents_cfg["decode_steps"]
    decoded = codec.decode(
        torch.from_numpy(store.read("z_sem")[:n_rec]), torch.from_numpy(store.read("z_t")[:n_rec]), steps
    )
    mse = float(((decoded.clamp(-1, 1) - images) ** 2).mean())
    assert batched["reconstruction"]["decode_steps"]["mse"] == pytest.approx(mse, rel=1e-4)


def test_regressor_dirs_are_the_model_directories_of_the_regressor_inputs():
    from diffxai.jobs.model_inputs import model_dir, optional_model_dir, regressor_dirs

    named = [
        ("data", ["results/e/data.zarr"]),
        ("classifier", ["results/e/models/classifier/model.safetensors", "x/config.json"]),
        ("regressor_regressor_area", ["results/e/models/regressor_area/model.safetensors", "y"]),
        ("regressor_size", ["m/size/model.safetensors", "m/size/config.json"]),
    ]
    assert regressor_dirs(named) == {"regressor_area": "results/e/models/regressor_area", "size": "m/size"}
    assert regressor_dirs(named[:2]) == {}
    assert model_dir(named[1][1]) == "results/e/models/classifier"
    assert optional_model_dir(named, "classifier") == "results/e/models/classifier"
    assert optional_model_dir(named, "ddpm") is None


def _shard(path, shard: int, shards: int, ids: list[int], params=None, extra: bool = False, n_explained=4,
           batch_size=2):  # fmt: skip
    from diffxai.store import ArraySpec, StoreWriter

    specs = {"sample_ids": ArraySpec((), "<i8"), "success": ArraySpec((), "|b1"), "nfe": ArraySpec((), "<f8"),
             "nfe_backward": ArraySpec((), "<f8"), "seconds": ArraySpec((), "<f8")}  # fmt: skip
    if extra:
        specs["masks"] = ArraySpec((2,), "|u1")
    attrs = {"method": "dime", "params": params or {"tau": 60}, "shard": shard, "shards": shards,
             "batch_size": batch_size, "n_explained": n_explained,
             "provenance": {"config_hash": "c"}}  # fmt: skip
    n = len(ids)
    ids = np.array(ids, np.int64)  # the other arrays are functions of the id, to check the order
    arrays = {"sample_ids": ids, "success": ids % 2 == 0, "nfe": 10.0 * ids,
              "nfe_backward": np.zeros(n), "seconds": np.ones(n)}  # fmt: skip
    if extra:
        arrays["masks"] = np.zeros((n, 2), np.uint8)
    with StoreWriter(path, "explanations", specs, attrs=attrs) as writer:
        writer.append(**arrays)
        writer.finalize()
    return path


def test_gather_joins_one_runs_shards_in_order_and_refuses_shards_of_another_run(tmp_path):
    from diffxai.jobs import gather_explanations
    from diffxai.store import open_store

    def gather(*shards):
        return gather_explanations.run(list(shards), tmp_path / "out.zarr", {"run": "run0"})

    a, b = _shard(tmp_path / "a.zarr", 0, 2, [0, 1]), _shard(tmp_path / "b.zarr", 1, 2, [2, 3])
    figures = gather(a, b)
    means = {"nfe_mean": 15.0, "nfe_backward_mean": 0.0, "seconds_per_ce": 1.0}
    assert figures == {"n": 4, "flip_rate": 0.5, **means}
    out = open_store(tmp_path / "out.zarr", "explanations")
    assert out.attrs["summary"] == figures
    np.testing.assert_array_equal(out.read("sample_ids"), [0, 1, 2, 3])
    np.testing.assert_array_equal(out.read("nfe"), [0.0, 10.0, 20.0, 30.0])
    np.testing.assert_array_equal(out.read("success"), [True, False, True, False])
    with pytest.raises(ValueError, match="shard 1 of 2, expected 0 of 2"):
        gather(b, a)
    with pytest.raises(ValueError, match="expected 0 of 1"):
        gather(a)
    with pytest.raises(ValueError, match="other settings"):
        gather(a, _shard(tmp_path / "c.zarr", 1, 2, [2, 3], params={"tau": 30}))
    with pytest.raises(ValueError, match="different arrays"):
        gather(a, _shard(tmp_path / "d.zarr", 1, 2, [2, 3], extra=True))
    with pytest.raises(ValueError, match="duplicate sample ids"):
        gather(a, _shard(tmp_path / "e.zarr", 1, 2, [1, 2]))
    with pytest.raises(ValueError, match="other settings"):  # shard 1 of a run of 6 images
        gather(a, _shard(tmp_path / "f.zarr", 1, 2, [4, 5], n_explained=6))
    with pytest.raises(ValueError, match="other settings"):
        gather(a, _shard(tmp_path / "g.zarr", 1, 2, [2, 3], batch_size=1))
    with pytest.raises(ValueError, match="the shards hold 3 samples, their run explains 4"):
        gather(a, _shard(tmp_path / "h.zarr", 1, 2, [2]))
    empty = _shard(tmp_path / "i.zarr", 1, 2, [], n_explained=2)
    assert gather(_shard(tmp_path / "j.zarr", 0, 2, [0, 1], n_explained=2), empty)["n"] == 2


def _explanation_store(path, ids, counterfactuals, **maps):
    """An explanation store of ``ids`` with their counterfactuals (N, 1, 16, 16) and ``maps``."""
    from diffxai.store import ArraySpec, StoreWriter

    specs = {"sample_ids": ArraySpec((), "<i8"), "counterfactuals": ArraySpec((1, 16, 16), "<f4")}
    specs |= {name: ArraySpec(array.shape[1:], "<f4") for name, array in maps.items()}
    with StoreWriter(path, "explanations", specs, attrs={}) as writer:
        writer.append(sample_ids=ids, counterfactuals=counterfactuals, **maps)
        writer.finalize()
    return path


def test_report_grids_show_each_images_input_ce_difference_and_mask_and_refuse_other_stores(
    tmp_path, ellipses_store
):
    from diffxai.data.prepared import PreparedData
    from diffxai.jobs import report_figures
    from diffxai.store import StoreError

    data = PreparedData(ellipses_store)
    ids = data.indices("test")[[3, 1]]
    inputs = data.array("images")[ids].astype(np.float32) / 127.5 - 1  # (2, 1, 16, 16)
    counterfactuals = inputs / 2  # |difference| on [0, 1]: |x| / 4, at most a quarter of the scale
    masks = np.zeros((2, 1, 16, 16), np.float32)
    masks[:, :, 4:8, 4:8] = 0.5
    store = _explanation_store(tmp_path / "e.zarr", ids, counterfactuals, masks=masks)
    panels = report_figures.explanation_panels(store, data, 2)
    assert [panel.title for panel in panels] == ["input", "counterfactual", "|difference|", "mask"]
    assert not any(panel.signed for panel in panels)
    np.testing.assert_allclose(panels[0].images, ((inputs + 1) / 2).transpose(0, 2, 3, 1), atol=1e-6)
    np.testing.assert_allclose(panels[1].images, ((inputs / 2 + 1) / 2).transpose(0, 2, 3, 1), atol=1e-6)
    np.testing.assert_allclose(panels[2].images, np.abs(inputs[:, 0]) / 4, atol=1e-6)  # not rescaled
    np.testing.assert_array_equal(panels[3].images, masks[:, 0])
    shown = report_figures.display(panels[2].images[0], panels[2].signed)
    assert (shown["cmap"], shown["vmin"], shown["vmax"]) == ("gray", 0, 1)  # the images' own scale
    with pytest.raises(StoreError, match="expected 'attributions'"):
        report_figures.attribution_panels(store, data, 2)


def test_gcds_bb_lig_map_is_drawn_signed_symmetric_about_zero(tmp_path, ellipses_store):
    from diffxai.data.prepared import PreparedData
    from diffxai.jobs import report_figures

    data = PreparedData(ellipses_store)
    ids = data.indices("test")[:2]
    inputs = data.array("images")[ids].astype(np.float32) / 127.5 - 1
    bb_lig = np.zeros((2, 16, 16), np.float32)
    bb_lig[0, 2, 2], bb_lig[0, 5, 5], bb_lig[1, 3, 3] = -0.4, 0.1, 2.0
    store = _explanation_store(tmp_path / "g.zarr", ids, inputs, bb_lig=bb_lig)
    panel = report_figures.explanation_panels(store, data, 2)[-1]
    assert panel.title == "BB-LIG" and panel.signed
    np.testing.assert_array_equal(panel.images, bb_lig)  # the sign kept
    shown = [report_figures.display(image, panel.signed) for image in panel.images]
    assert [(s["cmap"], s["vmin"], s["vmax"]) for s in shown] == [
        (report_figures.DIVERGING, pytest.approx(-0.4), pytest.approx(0.4)),
        (report_figures.DIVERGING, -2.0, 2.0),
    ]  # each image on ±its own largest |value|


def test_the_reports_config_is_the_validated_config_with_its_defaults(tmp_path, tiny_config):
    import yaml

    from diffxai.jobs import report_figures

    report_figures.write_config(tiny_config, tmp_path / "config.yaml")
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert written == tiny_config and list(written) == list(tiny_config)  # in the config's order
    assert written["results"] == "results/tiny" and written["report"] == {"n_images": 6}  # a default


def metric_rows(dataset, kind, method, setting, flip_rate, nfe):
    """metrics.csv rows of one run or ablation point: flip rate, NFE and an ℓ2 the plot ignores."""
    return [
        {
            "dataset": dataset,
            "kind": kind,
            "method": method,
            "setting": setting,
            "metric": metric,
            "value": value,
        }
        for metric, value in (("flip_rate", flip_rate), ("nfe", nfe), ("l2", 0.5))
    ]


def test_the_efficiency_plot_shows_explanation_runs_and_their_ablations_points_only():
    """A model, an attribution and an ablation that share DiME's name stay out; the points of an
    ablation of DiME join DiME's runs under its name, those of an ablation of ACE ACE's."""
    import pandas as pd

    from diffxai.jobs import report_figures

    rows = [
        *metric_rows("toy", "explanation", "dime", "run0", 0.8, 100),
        *metric_rows("toy", "explanation", "dime", "run1", 0.6, 100),
        *metric_rows("toy", "explanation", "ace", "run0", 0.9, 50),
        *metric_rows("other", "explanation", "dime", "run0", 0.1, 7),
        *metric_rows("toy", "model", "dime", "model", 0.0, 1),
        *metric_rows("toy", "attribution", "dime", "maps", 0.0, 2),
        *metric_rows("toy", "ablation", "dime", "tau=1", 0.0, 3),  # an ablation of ACE named dime
        *metric_rows("toy", "ablation", "dime_steps", "steps=10", 0.3, 20),
        *metric_rows("toy", "ablation", "dime_steps", "steps=400", 1.0, 4000),
        *metric_rows("toy", "ablation", "not_configured", "x=1", 0.5, 5),
    ]
    points = report_figures.efficiency_points(
        pd.DataFrame(rows), "toy", {"dime_steps": "dime", "dime": "ace"}
    )
    assert points.to_dict("index") == {
        ("ace", "dime:tau=1"): {"flip_rate": 0.0, "nfe": 3.0},
        ("ace", "run0"): {"flip_rate": 0.9, "nfe": 50.0},
        ("dime", "dime_steps:steps=10"): {"flip_rate": 0.3, "nfe": 20.0},
        ("dime", "dime_steps:steps=400"): {"flip_rate": 1.0, "nfe": 4000.0},
        ("dime", "run0"): {"flip_rate": 0.8, "nfe": 100.0},
        ("dime", "run1"): {"flip_rate": 0.6, "nfe": 100.0},
    }
    front = report_figures.pareto_front(points.loc["dime"])
    assert list(front.index) == ["dime_steps:steps=10", "run0", "dime_steps:steps=400"]  # not run1


def test_a_training_subset_is_drawn_at_random_not_the_first_rows(ellipses_store):
    from diffxai.data.prepared import PreparedData

    data = PreparedData(ellipses_store)
    train = data.indices("train")
    subset = data.subset("train", 20, seed=3)
    assert len(subset) == 20 and set(subset) <= set(train) and np.all(np.diff(subset) > 0)
    assert not np.array_equal(subset, train[:20])
    assert np.array_equal(subset, data.subset("train", 20, seed=3))
    assert not np.array_equal(subset, data.subset("train", 20, seed=4))
    assert np.array_equal(data.subset("train", None, 3), train)
    assert np.array_equal(data.subset("train", 10**6, 3), train)


def test_balanced_accuracy_averages_the_classes_present_in_the_test_split():
    from diffxai.jobs.train_supervised import evaluate

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0], torch.full_like(x[:, 0, 0, 0], -9)], dim=1)

    images = torch.tensor([255, 255, 0, 0], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    metrics = evaluate(
        "classifier", Fixed(), images, torch.tensor([0, 0, 1, 0]), ["a", "b", "c"], torch.device("cpu")
    )
    assert metrics["accuracy"] == 0.75  # class c has no test image: not a recall of 0
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)


def test_a_training_job_reads_how_often_it_checkpoints_from_the_config_not_its_params(ellipses_store):
    """The rule's params leave ``checkpoint_every`` out (changing it must re-train nothing);
    the job still checkpoints as the config says."""
    from types import SimpleNamespace

    from diffxai.jobs.model_job import ModelJob

    params_cfg = {"kind": "ddpm", "train": {"steps": 20, "hflip": False}}
    sm = SimpleNamespace(
        input=SimpleNamespace(data=str(ellipses_store)),
        output=SimpleNamespace(weights="out/ddpm/model.safetensors"),
        wildcards=SimpleNamespace(name="ddpm", dataset="ellipses"),
        params=SimpleNamespace(cfg=params_cfg, seed=3),
        config={"models": {"ddpm": {"train": {"steps": 20, "hflip": "auto", "checkpoint_every": 7}}}},
    )
    job = ModelJob.from_snakemake(sm, torch.device("cpu"))
    assert job.model_cfg["train"] == {"steps": 20, "hflip": False, "checkpoint_every": 7}
    assert params_cfg["train"] == {"steps": 20, "hflip": False}  # the params are not changed
