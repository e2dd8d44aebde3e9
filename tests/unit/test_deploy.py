"""deploy/: the Kubernetes manifests pass the Kubernetes schema (kubernetes-validate, strict), hold what the
issue asks of them, and the dashboard and alert rules name only series the server exports (metrics.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import the0.server.metrics  # noqa: F401 - registers every series

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifests_pass_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_server_deployment_probes_drains_and_scales() -> None:
    spec = by_kind("Deployment", "the0-api")["spec"]
    assert spec["replicas"] >= 2
    (container,) = spec["template"]["spec"]["containers"]
    assert container["readinessProbe"]["grpc"]["port"] == 50051  # grpc.health.v1
    assert "livenessProbe" in container
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > container["lifecycle"]["preStop"]["sleep"]["seconds"]


def test_nats_is_a_three_node_jetstream_cluster_that_syncs_always() -> None:
    assert by_kind("StatefulSet", "nats")["spec"]["replicas"] == 3
    conf = by_kind("ConfigMap", "nats")["data"]["nats.conf"]
    assert "sync_interval: always" in conf and "jetstream" in conf
    assert conf.count("nats://nats-") == 3
    assert by_kind("Service", "postgres")["spec"]["type"] == "ExternalName"


def exported_series() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
    return {n for n in names if n.startswith("the0_")} | {f"{n}_bucket" for n in names} | {f"{n}_total" for n in names}


def named_series(expressions: list[str]) -> set[str]:
    return {name for e in expressions for name in re.findall(r"\bthe0_[a-z_]+\b", e)}


def test_alert_rules_and_dashboard_name_only_exported_series() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    alerts = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert {"The0OutboxLagging", "The0NatsDown", "The0ErrorRate"} <= {
        rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    dashboard = json.loads((DEPLOY / "grafana" / "the0-api.json").read_text())
    panels = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = named_series(alerts + panels)
    assert named and named <= exported_series(), named - exported_series()
