"""The Grafana dashboard only queries series the mesh exports, and covers every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from common.telemetry import MeshMetrics, SettlementMetrics

DASHBOARD = Path(__file__).parents[2] / "helm" / "giftcard" / "dashboards" / "giftcard-mesh.json"


def exported_series() -> set[str]:
    registry = CollectorRegistry()
    MeshMetrics(registry)
    SettlementMetrics(registry)
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def queried_series(dashboard: dict) -> set[str]:
    names = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names.update(re.findall(r"\bgiftcard_[a-z_]+", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        names.update(re.findall(r"\bgiftcard_[a-z_]+", str(variable.get("query", ""))))
    return names


def test_dashboard_queries_only_exported_series_and_covers_them_all():
    dashboard = json.loads(DASHBOARD.read_text())
    exported, queried = exported_series(), queried_series(dashboard)
    assert queried <= exported, queried - exported
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exported}
    covered = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in queried}
    assert families == covered


def test_dashboard_panels_have_unique_ids_and_a_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "giftcard-mesh"
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
