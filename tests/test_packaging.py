"""The project's own files install what it needs, and the conda env agrees with them."""

from __future__ import annotations

import tomllib

import yaml

from tests.workflow_helpers import REPO


def _pyproject_pins() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def test_every_dependency_is_pinned_exactly():
    assert all("==" in requirement for requirement in _pyproject_pins())


def test_conda_env_pins_match_pyproject():
    env = yaml.safe_load((REPO / "envs" / "diffxai.yaml").read_text())
    pip = next(item for item in env["dependencies"] if isinstance(item, dict))["pip"]
    assert {line for line in pip if "==" in line} == _pyproject_pins()


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_results_are_git_ignored():
    assert "results/" in (REPO / ".gitignore").read_text().split()
