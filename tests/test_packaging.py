"""The project's own files install what it needs, and the conda env agrees with them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata

import yaml
from packaging.requirements import Requirement

from tests.workflow_helpers import REPO


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _pyproject_pins() -> set[str]:
    project = _project()
    return set(project["dependencies"]).union(*project["optional-dependencies"].values())


def _env_pins(family: str) -> set[str]:
    env = yaml.safe_load((REPO / "envs" / f"{family}.yaml").read_text())
    pip = next(item for item in env["dependencies"] if isinstance(item, dict))["pip"]
    assert "-e ../" in pip  # the package itself, from the checkout
    return {line for line in pip if "==" in line}


def _rules() -> dict[str, dict[str, str]]:
    """Every rule of rules/*.smk: its conda env file and the diffxai.jobs module its script runs."""
    rules = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        for name, body in re.findall(r"(?ms)^rule (\w+):\n(.*?)(?=^\S|\Z)", path.read_text()):
            conda = re.search(r'conda:\s+"\.\./envs/(\w+)\.yaml"', body)
            script = re.search(r'script:\s+"\.\./(scripts/\w+\.py)"', body)
            job = re.search(r"from diffxai\.jobs import (\w+)", (REPO / script.group(1)).read_text())
            rules[name] = {"env": conda and conda.group(1), "module": f"diffxai.jobs.{job.group(1)}"}
    return rules


def test_every_dependency_is_pinned_exactly():
    assert all("==" in requirement for requirement in _pyproject_pins())


def test_conda_envs_pin_what_pyproject_pins_per_rule_family():
    project = _project()
    assert _env_pins("data") == set(project["dependencies"])
    assert _env_pins("torch") == set(project["dependencies"]) | set(project["optional-dependencies"]["torch"])
    assert sorted(path.stem for path in (REPO / "envs").glob("*.yaml")) == ["data", "torch"]


def _requirement_closure(names: set[str]) -> tuple[set[str], set[str]]:
    """Normalised names of the distributions ``names`` need, transitively (installed metadata),
    and of those their extras name (optional imports a library tries when present)."""
    seen, optional, todo = set(), set(), [canonical(name) for name in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
            else:
                optional.add(canonical(requirement.name))
    return seen, optional


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_rule_runs_in_a_family_env_and_data_jobs_import_only_the_data_env():
    rules = _rules()
    assert len(rules) > 20 and {rule["env"] for rule in rules.values()} == {"data", "torch"}
    data_modules = sorted({rule["module"] for rule in rules.values() if rule["env"] == "data"})
    assert "diffxai.jobs.prepare_data" in data_modules and "diffxai.jobs.aggregate" in data_modules
    loaded = subprocess.run(  # a fresh interpreter: what importing the data jobs pulls in
        [
            sys.executable,
            "-c",
            "import importlib, json, sys; from importlib.metadata import packages_distributions\n"
            "startup = set(sys.modules)\n"
            f"for m in {[*data_modules, 'diffxai.jobs.common']!r}: importlib.import_module(m)\n"
            "tops = {n.split('.')[0] for n in set(sys.modules) - startup}; found = packages_distributions()\n"
            "print(json.dumps(sorted({d for t in tops for d in found.get(t, [])})))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    distributions = {canonical(name) for name in json.loads(loaded.stdout)} - {"diffxai"}
    core = {re.match(r"[\w.-]+", pin).group(0) for pin in _project()["dependencies"]}
    required, optional = _requirement_closure(core)
    assert "torch" not in distributions
    assert distributions <= required | optional


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_results_are_git_ignored():
    assert "results/" in (REPO / ".gitignore").read_text().split()
