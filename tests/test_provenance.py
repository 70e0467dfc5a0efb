"""Provenance: the import closure, source and config hashes, and the provenance record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffxai import provenance
from diffxai.provenance import config_hash, module_closure, source_hash


def test_closure_of_prepare_data_contains_what_it_imports_transitively():
    closure = module_closure(["diffxai.jobs.prepare_data"])
    for module in ("diffxai.data.prepare", "diffxai.data.prepared", "diffxai.data.kinds", "diffxai.store"):
        assert module in closure


def test_closure_contains_parent_packages():
    closure = module_closure(["diffxai.jobs.prepare_data"])
    for package in ("diffxai", "diffxai.jobs", "diffxai.data"):
        assert package in closure


def test_closure_of_prepare_data_excludes_unimported_modules():
    assert "diffxai.models.ddpm" not in module_closure(["diffxai.jobs.prepare_data"])


def test_closure_is_sorted_and_without_duplicates():
    closure = module_closure(["diffxai.jobs.prepare_data", "diffxai.store"])
    assert closure == sorted(set(closure))


@pytest.fixture
def fake_package(tmp_path, monkeypatch) -> Path:
    """A tiny package standing in for diffxai: a imports b (form set per test), c is unrelated."""
    root = tmp_path / "diffxai"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "b.py").write_text("x = 1\n")
    (root / "c.py").write_text("y = 1\n")
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", root)
    return root


IMPORT_FORMS = {
    "absolute-from": "from diffxai.b import x\n",
    "relative-from": "from .b import x\n",
    "absolute-import": "import diffxai.b\n",
    "package-from": "from diffxai import b\n",
    "relative-package-from": "from . import b\n",
}


@pytest.mark.parametrize("import_line", IMPORT_FORMS.values(), ids=IMPORT_FORMS.keys())
def test_source_hash_changes_when_an_imported_module_changes(fake_package, import_line):
    (fake_package / "a.py").write_text(import_line)
    before = source_hash("diffxai.a")
    (fake_package / "b.py").write_text("x = 2\n")
    assert source_hash("diffxai.a") != before


def test_source_hash_ignores_changes_to_unimported_modules(fake_package):
    (fake_package / "a.py").write_text("from .b import x\n")
    before = source_hash("diffxai.a")
    (fake_package / "c.py").write_text("y = 2\n")
    assert source_hash("diffxai.a") == before


def test_source_hash_follows_relative_imports_out_of_a_subpackage(fake_package):
    sub = fake_package / "sub"
    sub.mkdir()
    (sub / "__init__.py").write_text("")
    (sub / "d.py").write_text("from ..b import x\n")
    before = source_hash("diffxai.sub.d")
    (fake_package / "b.py").write_text("x = 3\n")
    assert source_hash("diffxai.sub.d") != before


def test_source_hash_changes_when_the_module_itself_changes(fake_package):
    (fake_package / "a.py").write_text("from .b import x\n")
    before = source_hash("diffxai.a")
    (fake_package / "a.py").write_text("from .b import x\nz = x\n")
    assert source_hash("diffxai.a") != before


def test_source_hash_of_a_non_diffxai_module_is_refused():
    with pytest.raises(ValueError, match="not a diffxai module"):
        source_hash("numpy.linalg")


def test_config_hash_is_independent_of_key_order():
    one = {"a": 1, "b": {"c": 2, "d": [1, 2]}}
    other = {"b": {"d": [1, 2], "c": 2}, "a": 1}
    assert config_hash(one) == config_hash(other)


def test_config_hash_changes_with_a_nested_value():
    assert config_hash({"a": 1, "b": {"c": 2}}) != config_hash({"a": 1, "b": {"c": 3}})


def test_provenance_record_names_config_code_seed_libraries_device_and_time():
    config = {"kind": "ellipses", "n_images": 10}
    record = provenance.provenance(config, ["diffxai.store"], seed=3, device="cpu", wall_time_s=1.23456)
    expected_keys = {"config", "config_hash", "source_hash", "seed", "versions", "device", "wall_time_s"}
    assert expected_keys <= set(record)
    assert record["config"] == config
    assert record["config_hash"] == config_hash(config)
    assert record["source_hash"] == source_hash("diffxai.store")
    assert record["seed"] == 3
    assert record["device"] == "cpu"
    assert record["wall_time_s"] == 1.235


def test_provenance_record_lists_versions_of_torch_diffusers_and_zarr():
    record = provenance.provenance({}, ["diffxai.store"], seed=None, device="cpu", wall_time_s=0)
    versions = record["versions"]
    for library in ("torch", "diffusers", "zarr"):
        assert versions[library] not in ("", "absent")


def test_source_hash_ignores_comments_docstrings_and_formatting_but_not_code(fake_package):
    (fake_package / "a.py").write_text(
        '"""A."""\nfrom .b import x\n\n\ndef f():\n    """Doc."""\n    return x\n'
    )
    before = source_hash("diffxai.a")
    (fake_package / "a.py").write_text(
        '"""Another."""\nfrom .b import x  # a comment\n\ndef f():\n    return (x)\n'
    )
    (fake_package / "b.py").write_text("# a note\nx = 1  # one\n")
    assert source_hash("diffxai.a") == before
    (fake_package / "a.py").write_text('from .b import x\n\n\ndef f():\n    """Doc."""\n    return x + 1\n')
    assert source_hash("diffxai.a") != before
    (fake_package / "a.py").write_text('from .b import x\n\n\ndef f():\n    return "Doc."\n')  # a value
    assert source_hash("diffxai.a") != before


def test_cuda_jobs_are_made_deterministic(monkeypatch):
    """The same-machine bit-identity promise on a GPU: cuDNN's autotuner off, deterministic
    kernels on (warning where an op has none), cuBLAS's workspace fixed before it starts."""
    import torch

    from diffxai.device import deterministic_cuda

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    algorithms = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    saved = (cudnn.deterministic, cudnn.benchmark, *algorithms)
    try:
        deterministic_cuda()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert (
            torch.are_deterministic_algorithms_enabled()
            and torch.is_deterministic_algorithms_warn_only_enabled()
        )
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def test_the_context_a_shard_script_builds_is_hashed_with_its_method():
    """The shard and ablation scripts build GCD's and TIME's context with functions of job modules
    outside the method's own: those modules are in the method's hash, and only in its."""
    from diffxai.jobs.distill import time_context
    from diffxai.jobs.gcd_directions import gcd_context
    from diffxai.methods.registry import METHOD_MODULES, method_modules

    assert gcd_context.__module__ in method_modules("gcd")
    assert time_context.__module__ in method_modules("time")
    for script in ("explain_shard.py", "ablation_point.py"):
        text = (Path(__file__).resolve().parents[1] / "scripts" / script).read_text()
        for builder in ("gcd_context", "time_context"):
            if builder in text:
                assert f"import {builder}" in text  # the ones checked above
    assert source_hash(*method_modules("gcd")) != source_hash(METHOD_MODULES["gcd"])
    assert "diffxai.jobs.distill" not in module_closure(method_modules("dime"))
    assert "diffxai.jobs.gcd_directions" not in module_closure(method_modules("dime"))
