"""The aggregate job: tidy rows of every artifact kind, tables with the best value in bold."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from diffxai.jobs import aggregate

PROVENANCE = {"config_hash": "abc", "source_hash": "def", "seed": 3}


def write(path, record):
    path.write_text(json.dumps(record))
    return str(path)


def entry(path, kind, method, setting="run0", dataset="toy", classifier="clf"):
    return {"path": path, "kind": kind, "dataset": dataset, "classifier": classifier, "method": method,
            "setting": setting}  # fmt: skip


def table_and_markdown(entries, name, label_factors=None):
    """The named table of the entries' report (metric keys as columns) and its markdown."""
    table = aggregate.report_tables(aggregate.tidy(entries), entries, label_factors)[name]
    return table.table, aggregate.markdown(*table)


def test_numeric_leaves_flatten_nested_numbers_and_skip_lists_flags_and_provenance():
    record = {
        "a": 1,
        "b": {"c": 0.5, "d": [1, 2], "e": True},
        "provenance": {"x": 1},
        "params": {"k": 2},
        "s": "t",
    }
    assert dict(aggregate.numeric_leaves(record)) == {"a": 1.0, "b.c": 0.5}


def test_tidy_rows_carry_labels_count_and_a_provenance_hash(tmp_path):
    dime = write(tmp_path / "dime.json", {"n": 10, "flip_rate": 0.9, "nfe": 100, "provenance": PROVENANCE})
    frame = aggregate.tidy([entry(dime, "explanation", "dime")])
    assert list(frame.columns) == list(aggregate.COLUMNS)
    row = frame.set_index("metric").loc["flip_rate"]
    assert (row["dataset"], row["classifier"], row["method"], row["setting"]) == (
        "toy",
        "clf",
        "dime",
        "run0",
    )
    assert row["value"] == 0.9 and row["n"] == 10
    assert set(frame["metric"]) == {"n", "flip_rate", "nfe"}
    other = write(
        tmp_path / "other.json", {"n": 10, "flip_rate": 0.9, "provenance": {**PROVENANCE, "seed": 4}}
    )
    changed = write(
        tmp_path / "changed.json",
        {"n": 10, "flip_rate": 0.9, "provenance": {**PROVENANCE, "config_hash": "x"}},
    )
    hashes = {
        path: aggregate.tidy([entry(path, "explanation", "m")])["provenance"].iloc[0]
        for path in (dime, other, changed)
    }
    assert hashes[dime] == hashes[other] != hashes[changed]  # config and code, not the seed
    measured = {**PROVENANCE, "explanations_config_hash": "e1"}  # metrics of two explanations' CEs
    rows = [
        write(tmp_path / f"{h}.json", {"n": 10, "provenance": {**measured, "explanations_config_hash": h}})
        for h in ("e1", "e2")
    ]
    first, second = (aggregate.tidy([entry(path, "explanation", "m")])["provenance"].iloc[0] for path in rows)
    assert first != second != hashes[dime]


def test_a_models_rows_carry_the_provenance_of_its_config_json(tmp_path):
    def model_dir(name: str, source_hash: str):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(
            json.dumps({"provenance": {**PROVENANCE, "source_hash": source_hash}})
        )
        return write(folder / "metrics.json", {"n_test": 5, "test": {"accuracy": 0.9}})

    digests = [
        aggregate.tidy([entry(model_dir(name, code), "model", name, setting="model")])["provenance"].iloc[0]
        for name, code in (("a", "s1"), ("b", "s2"), ("c", "s1"))
    ]
    assert digests[0] == digests[2] != digests[1]


def test_variance_records_give_a_setting_per_feature(tmp_path):
    size = {"scores": {"class": {"global_score": 0.1, "local_scores": [0.2]}}}
    scores = {"n_test": 50, "features": {"size": size, "shape": {"scores": {"class": {"global_score": 0.8}}}}}
    frame = aggregate.tidy([entry(write(tmp_path / "s.json", scores), "variance", "va", setting=None)])
    values = frame.set_index(["setting", "metric"])["value"]
    assert values[("size", "scores.class.global_score")] == 0.1
    assert values[("shape", "scores.class.global_score")] == 0.8
    assert len(frame) == 2  # local score lists are left out


def ablation_csv(tmp_path):
    """An ablation table.csv (``jobs.ablation_table``) of two settings."""
    table = tmp_path / "table.csv"
    header = "setting,particles,beta,flip_rate,l2,fid,nfe,classifier_calls,seconds_per_ce,n,n_successful"
    table.write_text(
        f"{header}\nparticles=10,10,0.01,0.5,0.3,,110,1,0.2,20,10\nbeta=0.0,100,0.0,0.75,0.2,4.0,260,1,0.3,20,15\n"
    )
    return str(table)


def test_ablation_tables_give_a_setting_per_row(tmp_path):
    frame = aggregate.tidy([entry(ablation_csv(tmp_path), "ablation", "abl", setting=None)])
    values = frame.set_index(["setting", "metric"])["value"]
    assert values[("particles=10", "flip_rate")] == 0.5 and values[("beta=0.0", "nfe")] == 260
    counts = frame.set_index(["setting", "metric"])["n"]
    assert counts[("beta=0.0", "flip_rate")] == 20 and counts[("beta=0.0", "nfe")] == 20
    assert counts[("beta=0.0", "l2")] == 15 and counts[("beta=0.0", "fid")] == 15  # the flipped CEs
    assert counts[("particles=10", "l2")] == 10
    assert set(frame["metric"]) == {
        "flip_rate",
        "l2",
        "fid",
        "nfe",
        "classifier_calls",
        "seconds_per_ce",
    }  # not the parameters, nor the counts


def test_an_ablation_table_titles_its_columns_and_marks_their_directions(tmp_path):
    entries = [entry(ablation_csv(tmp_path), "ablation", "abl", setting=None)]
    table, text = table_and_markdown(entries, "ablation_abl_toy")
    assert list(table.index) == ["particles=10", "beta=0.0"]
    assert "| setting | flip rate ↑ | ℓ2 ↓ | FID ↓ | NFE ↓ | queries ↓ | s / CE ↓ |" in text
    assert "| beta=0.0 | **0.750** | **0.200** | 4.000 | 260 | 1.000 | 0.300 |" in text


def test_tables_average_runs_and_bold_the_best_per_column(tmp_path):
    entries = []
    for method, runs in {"fast": [(0.8, 10), (1.0, 10)], "slow": [(0.95, 1000)]}.items():
        for index, (flip, nfe) in enumerate(runs):
            record = {"n": 4, "flip_rate": flip, "nfe": nfe, "provenance": PROVENANCE}
            entries.append(
                entry(write(tmp_path / f"{method}{index}.json", record), "explanation", method, f"run{index}")
            )
    table, text = table_and_markdown(entries, "counterfactuals_toy_clf")
    assert table.loc["fast", "flip_rate"] == pytest.approx(0.9)
    assert "| fast | 0.900 | **10.000** |" in text  # lower NFE is better
    assert "| slow | **0.950** | 1000 |" in text  # higher flip rate is better
    assert "flip rate ↑" in text and "NFE ↓" in text


def test_a_column_of_equal_values_marks_no_best(tmp_path):
    entries = [
        entry(write(tmp_path / f"{m}.json", {"n": 4, "flip_rate": 0.0, "nfe": nfe, "provenance": PROVENANCE}),
              "explanation", m, "run0")
        for m, nfe in (("a", 10), ("b", 20))
    ]  # fmt: skip
    _, text = table_and_markdown(entries, "counterfactuals_toy_clf")
    assert "| a | 0.000 | **10.000** |" in text and "| b | 0.000 | 20.000 |" in text


def test_run_writes_the_tidy_csv_tables_and_markdown(tmp_path):
    record = {"n": 4, "flip_rate": 1.0, "provenance": PROVENANCE}
    entries = [entry(write(tmp_path / "a.json", record), "explanation", "dime")]
    outputs = (tmp_path / "out/metrics.csv", tmp_path / "out/tables", tmp_path / "out/tables.md")
    aggregate.run(entries, {"toy": None}, *outputs)
    metrics = pd.read_csv(tmp_path / "out/metrics.csv")
    assert list(metrics.columns) == list(aggregate.COLUMNS) and set(metrics["kind"]) == {"explanation"}
    table = pd.read_csv(tmp_path / "out/tables/counterfactuals_toy_clf.csv")  # titled as the markdown
    assert list(table.columns) == ["counterfactual", "flip rate ↑"] and table["flip rate ↑"].tolist() == [1.0]
    assert "## Counterfactuals: toy, classifier clf" in (tmp_path / "out/tables.md").read_text()


def test_gcd_summary_gives_a_table_of_its_directions_flip_rates_and_factor_changes(tmp_path):
    change = lambda ar, area: {  # noqa: E731
        "log_aspect_ratio": {"measured_by": "regressor_aspect", "mean_abs_change_in_std": ar},
        "area": {"measured_by": "regressor_area", "mean_abs_change_in_std": area, "mean_abs_change": 9.0},
    }
    record = {
        "sources": {"across_runs": {"flip_rate": {"mean": 0.8, "std": 0.1, "n_runs": 5}}},
        "globality": {
            "n_images": 50,
            "flip_rate": {"g": 0.9, "h1": 0.5, "h2": 0.0},
            "eigenvalues": [0.3, 0.1],
            "factor_changes": {"g": change(0.4, 1.8), "h1": change(1.5, 0.2), "h2": {}},
            "others_combined": {"directions": ["h2"], "flip_rate": 0.25, "mean_cf_loss": 0.7},
        },
        "provenance": PROVENANCE,
    }
    entries = [entry(write(tmp_path / "gcd.json", record), "gcd_summary", "gcd", setting="all")]
    table, text = table_and_markdown(entries, "gcd_directions_gcd_toy")
    assert list(table.index) == ["g", "h1", "h2", "others combined"]
    assert list(table.columns) == ["flip_rate", "area", "log_aspect_ratio"]
    assert table.loc["h1", "log_aspect_ratio"] == 1.5 and table.loc["g", "area"] == 1.8
    assert table.loc["others combined", "flip_rate"] == 0.25 and pd.isna(table.loc["h2", "area"])
    assert "| direction | flip rate ↑ | Δ area (std) | Δ log_aspect_ratio (std) |" in text
    assert "| g | **0.900** | 1.800 | 0.400 |" in text  # the factors' columns mark no best


def counterfactual_entries(tmp_path, changes_by_method):
    """Explanation entries whose metrics measured {factor: Δ in std} per method."""
    entries = []
    for method, changes in changes_by_method.items():
        factors = {f: {"measured_by": f"reg_{f}", "mean_abs_change_in_std": d} for f, d in changes.items()}
        record = {"n": 4, "flip_rate": 1.0, "factor_changes": factors, "provenance": PROVENANCE}
        entries.append(entry(write(tmp_path / f"{method}.json", record), "explanation", method))
    return entries


ASPECT_FIRST = "| Δ log_aspect_ratio (std) ↑ | Δ area (std) ↓ |"
ASPECT_BEST = "| a | 1.000 | **1.500** | **0.100** |"


@pytest.mark.parametrize(
    ("label_factor", "header", "best"),
    [
        ("area", "| Δ area (std) ↑ | Δ log_aspect_ratio (std) ↓ |", "| b | 1.000 | **2.000** | **0.500** |"),
        ("log_aspect_ratio", ASPECT_FIRST, ASPECT_BEST),
        ("aspect_ratio", ASPECT_FIRST, ASPECT_BEST),  # one quantity, either scale
        ("angle", "| Δ area (std) ↓ | Δ log_aspect_ratio (std) ↓ |", "| a | 1.000 | **0.100** | 1.500 |"),
        (None, "| Δ area (std) | Δ log_aspect_ratio (std) |", "| a | 1.000 | 0.100 | 1.500 |"),
    ],
)  # fmt: skip
def test_the_label_factor_is_the_one_counterfactuals_should_change(tmp_path, label_factor, header, best):
    changes = {"a": {"log_aspect_ratio": 1.5, "area": 0.1}, "b": {"log_aspect_ratio": 0.5, "area": 2.0}}
    entries = counterfactual_entries(tmp_path, changes)
    _, text = table_and_markdown(entries, "counterfactuals_toy_clf", {"toy": label_factor})
    assert f"| counterfactual | flip rate ↑ {header}" in text
    assert best in text


def test_the_model_table_has_a_ks_column_per_measured_factor(tmp_path):
    record = {"n_samples": 8, "ks": {f: {"measured_by": f"reg_{f}", "ks": d, "p_value": 0.5}
                                     for f, d in (("area", 0.2), ("angle", 0.4))},
              "wall_time_s": 3.0, "provenance": PROVENANCE}  # fmt: skip
    other = {"n": 8, "test": {"accuracy": 0.9}, "wall_time_s": 1.0, "provenance": PROVENANCE}
    entries = [
        entry(write(tmp_path / "ddpm.json", record), "model", "ddpm", "model", classifier=None),
        entry(write(tmp_path / "clf.json", other), "model", "clf", "model", classifier=None),
    ]
    table, text = table_and_markdown(entries, "models_toy")
    assert list(table.columns) == ["test.accuracy", "ks.angle.ks", "ks.area.ks", "wall_time_s"]
    assert "| model | accuracy ↑ | KS angle ↓ | KS area ↓ | time (s) ↓ |" in text
    assert "| ddpm | – | 0.400 | 0.200 | 3.000 |" in text


def test_a_metric_measured_on_a_subset_carries_the_subsets_count(tmp_path):
    """Distances of successful CEs only (n_of), nested factor changes by their prefix; the rest n."""
    record = {"n": 100, "n_successful": 58, "flip_rate": 0.58, "l1": 0.02,
              "factor_changes": {"area": {"mean_abs_change_in_std": 0.3}},
              "n_of": {"l1": 58, "factor_changes": 58}, "provenance": PROVENANCE}  # fmt: skip
    frame = aggregate.tidy([entry(write(tmp_path / "ce.json", record), "explanation", "ace")])
    n = frame.set_index("metric")["n"]
    assert n["flip_rate"] == 100 and n["l1"] == 58 and n["factor_changes.area.mean_abs_change_in_std"] == 58
    assert not frame["metric"].str.startswith("n_of").any()


def test_sample_count_takes_the_longest_matching_prefix():
    from diffxai.jobs.common import sample_count

    counts = {"a": 5, "a.b": 3, "ab": 9}
    assert [sample_count(m, 10, counts) for m in ("a", "a.b.c", "a.bc", "ab", "c")] == [5, 3, 5, 9, 10]


def test_gcd_summary_counts_runs_images_and_flipped_images_per_section():
    from diffxai.jobs.gcd_summary import record_counts

    summary = {
        "sources": {"runs": [{}, {}, {}]},
        "globality": {"n_images": 50, "flip_rate": {"g": 0.8, "h1": 0.0},
                      "factor_changes": {"g": {"area": {}}, "h1": {}}},
        "attribution": {"region_present": 40},
    }  # fmt: skip
    assert record_counts(summary) == {
        "sources": 3, "efficiency": 3, "globality": 50, "globality.factor_changes.g": 40,
        "globality.factor_changes.h1": 0, "attribution": 40,
    }  # fmt: skip


def test_values_that_print_as_the_best_are_all_bold_and_sigma_l_joins_its_methods_row(tmp_path):
    """s / CE 0.4657 and 0.4661 both print 0.466: both bold, not one of two equal-looking cells;
    a diversity record's σ_L is a column of its method's row."""
    entries = [
        entry(write(tmp_path / f"{m}.json", {"n": 4, "seconds_per_ce": s, "provenance": PROVENANCE}),
              "explanation", m, "run0")
        for m, s in (("a", 0.4657), ("b", 0.4661), ("c", 0.9))
    ]  # fmt: skip
    entries.append(
        entry(write(tmp_path / "div.json", {"n": 4, "runs": 2, "sigma_l": 0.012, "provenance": PROVENANCE}),
              "diversity", "a", "diversity")
    )  # fmt: skip
    table, text = table_and_markdown(entries, "counterfactuals_toy_clf")
    assert list(table.columns) == ["sigma_l", "seconds_per_ce"]
    assert (
        "| a | 0.012 | **0.466** |" in text
        and "| b | – | **0.466** |" in text
        and "| c | – | 0.900 |" in text
    )


def test_the_randomisation_correlation_closest_to_zero_is_the_best(tmp_path):
    """A map that depends on the weights decorrelates when they are randomised: ρ near 0 is best,
    a strongly negative ρ (still tied to the trained map) is not."""
    entries = [
        entry(write(tmp_path / f"{m}.json", {"n": 4, "randomisation_spearman_all_layers": rho,
                                              "provenance": PROVENANCE}), "attribution", m, "maps")
        for m, rho in (("anti", -0.9), ("free", 0.05), ("same", 0.8))
    ]  # fmt: skip
    _, text = table_and_markdown(entries, "attributions_toy_clf")
    assert "rank corr. randomised → 0" in text
    assert "| free | **0.050** |" in text and "| anti | -0.900 |" in text


def test_a_name_shared_by_a_model_and_an_attribution_keeps_each_table_to_its_kind(tmp_path):
    """A classifier and its maps both called hit: the models table has no attribution time, the
    attributions table no accuracy."""
    folder = tmp_path / "hit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"provenance": PROVENANCE}))
    model = write(folder / "metrics.json", {"n_test": 5, "test": {"accuracy": 0.9}, "wall_time_s": 10.0})
    maps = write(
        tmp_path / "maps.json", {"n": 4, "mask_auroc": 0.8, "wall_time_s": 99.0, "provenance": PROVENANCE}
    )
    entries = [
        entry(model, "model", "hit", setting="model"),
        entry(maps, "attribution", "hit", setting="maps"),
    ]
    tables = aggregate.report_tables(aggregate.tidy(entries), entries)
    assert tables["models_toy_clf"][0].loc["hit", "wall_time_s"] == 10.0
    assert list(tables["attributions_toy_clf"][0].columns) == ["mask_auroc"]


def test_a_record_with_n_and_n_images_counts_n():
    assert aggregate._sample_count({"n": 5, "n_images": 7}) == 5


def test_entry_rows_keep_to_the_entrys_kind():
    row = {"dataset": "d", "method": "hit", "metric": "m"}
    frame = pd.DataFrame([{**row, "kind": "model", "value": 1.0}, {**row, "kind": "variance", "value": 2.0}])
    rows = aggregate.entry_rows(frame, {"dataset": "d", "method": "hit", "kind": "variance"})
    assert rows["value"].tolist() == [2.0]


def test_one_method_name_under_two_classifiers_keeps_each_table_to_its_classifier(tmp_path):
    """DiME explaining a ResNet (flip rate 0.9) and a ViT (0.1): each classifier's table shows
    its own run, not the mean of both."""
    records = {
        name: write(tmp_path / f"{name}.json", {"n": 10, "flip_rate": rate, "provenance": PROVENANCE})
        for name, rate in (("resnet", 0.9), ("vit", 0.1))
    }
    entries = [entry(path, "explanation", "dime", classifier=name) for name, path in records.items()]
    tables = aggregate.report_tables(aggregate.tidy(entries), entries)
    assert tables["counterfactuals_toy_resnet"][0].loc["dime", "flip_rate"] == 0.9
    assert tables["counterfactuals_toy_vit"][0].loc["dime", "flip_rate"] == 0.1
