"""Fixtures shared by the workflow test modules."""

from __future__ import annotations

import pytest

from tests.workflow_helpers import snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny preset run once, end to end, in a fresh directory (shared by every module)."""
    workdir = tmp_path_factory.mktemp("tiny")
    result = snakemake(workdir, timeout=1800)  # ~120 jobs, each paying seconds of imports
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir
