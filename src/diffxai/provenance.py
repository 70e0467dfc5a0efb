"""Provenance: which code, config, seed and libraries produced an artifact.

Snakemake watches only the script file of a rule, not the modules it imports
(see SNAKEMAKE.md), so rules put :func:`source_hash` of their entry modules into
``params``. The hash covers the transitive closure of ``diffxai`` imports, found
by parsing the sources (nothing is imported, so the Snakefile stays fast to parse),
and hashes each module's syntax tree without its docstrings: comments, docstrings and
formatting re-run nothing, any change to what the code does re-runs its jobs.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import platform
import socket
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE = "diffxai"
PACKAGE_ROOT = Path(__file__).resolve().parent
TRACKED_LIBRARIES = ("torch", "diffusers", "zarr", "numpy", "timm", "snakemake")


def module_file(module: str) -> Path:
    """Source file of a dotted ``diffxai`` module name (package -> its ``__init__.py``)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"not a {PACKAGE} module: {module!r}")
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    raise ModuleNotFoundError(f"no source file for {module!r} under {PACKAGE_ROOT}")


def _is_package(module: str) -> bool:
    return module_file(module).name == "__init__.py"


def _resolve_relative(module: str, level: int, name: str | None) -> str:
    parts = module.split(".")
    anchor = parts if _is_package(module) else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join(anchor + ([name] if name else []))


def _imported_modules(module: str) -> set[str]:
    """``diffxai`` modules imported by ``module`` (absolute and relative imports)."""
    return set(_parsed(module, module_file(module).read_bytes())[0])


def _code(module: str) -> str:
    """What ``module`` does: its syntax tree without docstrings, as text."""
    return _parsed(module, module_file(module).read_bytes())[1]


DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _without_docstrings(tree: ast.Module) -> ast.Module:
    """``tree`` with the docstring of the module and of every class and function removed."""
    for node in ast.walk(tree):
        if not isinstance(node, DOCUMENTED) or not node.body:
            continue
        first = node.body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            node.body = node.body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _parsed(module: str, source: bytes) -> tuple[frozenset[str], str]:
    """The imports and the docstring-free syntax tree (text) of one version of a module's source
    (cached by content: the Snakefile hashes many rules' closures, which share most modules)."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module) if node.level else node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            found.add(base)
            # `from diffxai.data import ellipses` imports a submodule, not a name
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                try:
                    module_file(candidate)
                except ModuleNotFoundError:
                    continue
                found.add(candidate)
    return frozenset(found), ast.dump(_without_docstrings(tree))


def module_closure(modules: Iterable[str]) -> list[str]:
    """Sorted transitive closure of ``diffxai`` imports, parents packages included."""
    todo = list(modules)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imported_modules(module) - seen)
    return sorted(seen)


def source_hash(*modules: str) -> str:
    """SHA-256 (hex, 16 chars) of the code of ``modules`` and everything they import (syntax
    trees without docstrings: comments and formatting do not count)."""
    digest = hashlib.sha256()
    for module in module_closure(modules):
        digest.update(module.encode())
        digest.update(_code(module).encode())
    return digest.hexdigest()[:16]


def config_hash(config: Any) -> str:
    """Stable short hash of a JSON-serialisable config subset."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour shapes the artifacts."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def provenance(
    config: Any,
    modules: Iterable[str],
    seed: int | None,
    device: str,
    wall_time_s: float,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance record stored in every artifact's attributes."""
    modules = list(modules)
    return {
        "config": config,
        "config_hash": config_hash(config),
        "modules": module_closure(modules),
        "source_hash": source_hash(*modules),
        "seed": seed,
        "versions": library_versions(),
        "device": device,
        "wall_time_s": round(float(wall_time_s), 3),
        "host": socket.gethostname(),
        "argv": sys.argv,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
