"""docs/operations.md names every configuration key and every exported metric family."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from common.config import MerchantSettings, ProviderProfile, Settings
from common.telemetry import MeshMetrics, SettlementMetrics

DOC = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()


def _model(annotation):
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Leaf keys, plus optional sub-sections (e.g. grpc.tls) themselves."""
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        nested = _model(annotation)
        optional = False
        if nested is None and type(None) in getattr(annotation, "__args__", ()):  # `X | None`
            nested = next((m for m in map(_model, annotation.__args__) if m), None)
            optional = nested is not None
        if nested is None:
            keys.append(key)
            continue
        if optional:
            keys.append(key)
        keys.extend(config_keys(nested, key + "."))
    return keys


def test_every_config_key_is_documented():
    keys = [k for k in config_keys(Settings) if k not in ("merchants", "endpoints")]
    keys += [f"merchants.<id>.{k}" for k in MerchantSettings.model_fields if k != "providers"]
    keys += [f"merchants.<id>.providers[].{k}" for k in ProviderProfile.model_fields]
    keys += ["endpoints.<service>"]
    missing = [key for key in keys if f"`{key}`" not in DOC]
    assert not missing, f"add these keys to docs/operations.md (configuration reference): {missing}"


def test_every_metric_family_is_documented():
    registry = CollectorRegistry()
    MeshMetrics(registry)
    SettlementMetrics(registry)
    names = []
    for family in registry.collect():
        names.append(family.name + ("_total" if family.type == "counter" else ""))
    missing = [name for name in names if f"`{name}`" not in DOC]
    assert not missing, missing
