"""Constants and small helpers shared by the chart tests (a plain module, imported by name:
conftest modules are not meant to be imported)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "giftcard"
RELEASE = "giftcard"
NAMESPACE = "payments"

# The value sets every structural test runs over: name -> values files (relative to the chart).
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "default": (),
    "all-in-one": ("ci/all-in-one-values.yaml",),
    "external-secrets": ("ci/external-secrets-values.yaml",),
    "bundled-redis": ("ci/bundled-redis-values.yaml",),
}


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def value_args(files: Sequence[str] = (), sets: Sequence[str] = ()) -> list[str]:
    args: list[str] = []
    for name in files:
        args += ["--values", str(CHART / name)]
    for item in sets:
        args += ["--set", item]
    return args
