"""Ablation designs (one at a time, grid) and the ablation table job."""

import csv
import json

import pytest
from snakemake.target_jobs import parse_target_jobs_cli_args

from diffxai.config.ablation_design import ablation_settings, setting_label
from diffxai.jobs import ablation_table


def test_one_at_a_time_replaces_one_parameter_per_setting_in_listed_order():
    entry = {"design": "one_at_a_time", "vary": {"particles": [10, 50], "beta": [0.0]}}
    assert ablation_settings(entry) == {
        "particles=10": {"particles": 10},
        "particles=50": {"particles": 50},
        "beta=0.0": {"beta": 0.0},
    }


def test_design_defaults_to_one_at_a_time():
    assert list(ablation_settings({"vary": {"tau": [25, 30], "w": [3]}})) == ["tau=25", "tau=30", "w=3"]


def test_grid_is_every_combination_with_the_last_parameter_fastest():
    entry = {"design": "grid", "vary": {"tau": [25, 30, 35], "w": [3, 4], "guidance": ["cfg"]}}
    settings = ablation_settings(entry)
    assert len(settings) == 3 * 2 * 1
    assert list(settings)[:3] == [
        "tau=25+w=3+guidance=cfg",
        "tau=25+w=4+guidance=cfg",
        "tau=30+w=3+guidance=cfg",
    ]
    assert settings["tau=35+w=4+guidance=cfg"] == {"tau": 35, "w": 4, "guidance": "cfg"}
    assert all(setting_label(values) == label for label, values in settings.items())


def test_list_values_are_labelled_without_commas_and_labels_must_differ():
    labels = list(
        ablation_settings({"vary": {"lambda_c": [[8, 10], [15]], "attempts": [[[25, 3], [30, 4]]]}})
    )
    assert labels == ["lambda_c=8_10", "lambda_c=15", "attempts=25_3__30_4"]
    with pytest.raises(ValueError, match="share a label"):
        ablation_settings({"vary": {"guidance": ["a_b", ["a", "b"]]}})


@pytest.mark.parametrize("design", ["one_at_a_time", "grid"])
def test_setting_labels_survive_a_cluster_jobs_target_wildcards(design):
    """A SLURM job reruns snakemake with --target-jobs RULE:KEY=VALUE,...; the label must come back whole."""
    vary = {"tau": [25, 30], "w": [3.5], "guidance": ["cfg"], "lambda_c": [[8, 10], [15]],
            "attempts": [[[25, 3], [30, 4]]]}  # fmt: skip
    entry = {"design": design, "vary": vary}
    for label in ablation_settings(entry):
        spec = f"ablation_point:dataset=ellipses,ablation=a,setting={label}"
        (target,) = parse_target_jobs_cli_args([spec])
        assert target.wildcards_dict == {"dataset": "ellipses", "ablation": "a", "setting": label}


def _points(tmp_path, settings, base):
    """Point JSONs as jobs.ablation writes them; flip rate = tau / 100 + w / 10 to check placement."""
    paths = []
    for index, (label, values) in enumerate(settings.items()):
        params = {**base, **values}
        figures = {
            "flip_rate": params["tau"] / 100 + params["w"] / 10,
            "l2": 0.5,
            "fid": 1.0,
            "nfe": 8.0 * params["tau"],
        }
        record = {
            "setting": label,
            "n": 20,
            "n_successful": 10,
            "classifier_calls": 2.0,
            "seconds_per_ce": 0.1,
            **figures,
            "params": params,
        }
        paths.append(tmp_path / f"{index}.json")
        paths[-1].write_text(json.dumps(record))
    return paths


def test_grid_table_rows_and_the_tau_by_w_layout(tmp_path):
    entry = {"design": "grid", "vary": {"tau": [25, 35], "w": [3, 4, 5]}}
    paths = _points(tmp_path, ablation_settings(entry), {"p": 0.93})
    csv_path, md_path = tmp_path / "table.csv", tmp_path / "table.md"
    ablation_table.write_table(paths, csv_path, md_path, "grid", ["tau", "w"], grid=True)
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["setting"] for row in rows] == list(ablation_settings(entry))
    assert (
        rows[4]["tau"] == "35" and rows[4]["w"] == "4" and float(rows[4]["flip_rate"]) == pytest.approx(0.75)
    )
    text = md_path.read_text()
    assert "## flip rate ↑\n\n| tau | w=3 | w=4 | w=5 |\n|---|---|---|---|\n" in text
    assert "| 25 | 0.55 | 0.65 | 0.75 |\n| 35 | 0.65 | 0.75 | 0.85 |" in text
    assert "| 25 | 200 | 200 | 200 |" in text  # NFE = 8 tau


def test_one_at_a_time_table_shows_the_base_value_of_the_parameters_left_alone(tmp_path):
    entry = {"vary": {"tau": [25], "w": [6]}}
    paths = _points(tmp_path, ablation_settings(entry), {"tau": 35, "w": 4})
    csv_path, md_path = tmp_path / "table.csv", tmp_path / "table.md"
    ablation_table.write_table(paths, csv_path, md_path, "base 35/4", ["tau", "w"], grid=False)
    rows = list(csv.DictReader(csv_path.open()))
    assert [(row["setting"], row["tau"], row["w"]) for row in rows] == [
        ("tau=25", "25", "4"),
        ("w=6", "35", "6"),
    ]
    text = md_path.read_text()
    assert "| tau | w | flip rate ↑ | L2 ↓ |" in text and "| 25 | 4 | 0.65 |" in text
    assert "| s/CE | n | n CEs |" in text and "| 0.1 | 20 | 10 |" in text
    assert "## flip rate" not in text  # no grid layout for a one-at-a-time design


def test_grid_layout_leaves_a_missing_combination_blank():
    rows = [{"tau": 25, "w": 3, "flip_rate": 0.5}, {"tau": 30, "w": 4, "flip_rate": 0.9}]
    lines = ablation_table.grid_layout(rows, ["tau", "w"], "flip_rate")
    assert lines[2:] == ["| 25 | 0.5 |  |", "| 30 |  | 0.9 |"]
