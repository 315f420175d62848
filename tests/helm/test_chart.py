"""The Helm chart (helm/giftcard): lint, render, offline schema validation, and what the rendered
objects promise (probes, hardening, resources, autoscaling, disruption budgets, network isolation,
graceful termination, secrets), plus the Dockerfile the chart deploys by default.

Every value set in helm_support.VALUE_SETS is rendered with the real helm binary; each manifest is
validated against the Kubernetes OpenAPI schemas shipped in `kubernetes-validate` (strict: unknown
fields fail), for the oldest Kubernetes the chart supports and the newest schemas available.
Two tests go past the YAML: the bundled Redis command line and probe run on a real redis-server,
and the all-in-one pod's args, env and files start the real `giftcard` entry point, which must
answer the grpc.health.v1 probe and drain on SIGTERM within the termination grace period.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import redis as redis_py
import yaml
from kubernetes_validate.utils import all_versions

from helm_support import CHART, NAMESPACE, REPO, VALUE_SETS, HelmResult, value_args

GRPC_PORT = 50051
METRICS_PORT = 9464
SERVICES = ("balance", "authorization", "fulfillment", "settlement", "refund", "gateway")
PUBLIC_SERVICES = tuple(s for s in SERVICES if s != "gateway")
MIN_KUBE = "1.27"  # Chart.yaml kubeVersion
# Kinds that come from CRDs, which kubernetes-validate has no schema for; checked structurally.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Deployments that run without an HPA in a value set, by design (fixed replicas instead).
FIXED_REPLICAS = {"external-secrets": {"giftcard-settlement": 3}}

# A public vendor API address and in-cluster / metadata addresses, for NetworkPolicy evaluation.
VENDOR_IP = "203.0.113.10"
METADATA_IP = "169.254.169.254"
CLUSTER_IP = "10.0.0.5"


# ---------------------------------------------------------------------------------------------
# Helpers over rendered manifests
# ---------------------------------------------------------------------------------------------

def of_kind(manifests: list[dict], kind: str) -> list[dict]:
    return [m for m in manifests if m["kind"] == kind]


def by_name(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in of_kind(manifests, kind)}


def workloads(manifests: list[dict]) -> list[dict]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]


def pod_labels(workload: dict) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def mesh_deployments(manifests: list[dict]) -> list[dict]:
    return [d for d in of_kind(manifests, "Deployment") if any(
        p["containerPort"] == GRPC_PORT for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", []))]


def component(workload: dict) -> str:
    return pod_labels(workload)["app.kubernetes.io/component"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND every matchExpression)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policies_for(manifests: list[dict], labels: dict[str, str]) -> list[dict]:
    return [p for p in of_kind(manifests, "NetworkPolicy") if selects(p["spec"]["podSelector"], labels)]


def port_allowed(rule: dict, port: int, protocol: str = "TCP") -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports)


def peer_pods(peer: dict, manifests: list[dict]) -> set[str] | None:
    """Names of this release's workloads (same namespace) a peer admits; None = not a pod peer."""
    if set(peer) != {"podSelector"}:
        return None
    return {w["metadata"]["name"] for w in workloads(manifests) if selects(peer["podSelector"], pod_labels(w))}


def ip_in_peer(peer: dict, ip: str) -> bool:
    block = peer.get("ipBlock")
    if block is None:
        return False
    address = ipaddress.ip_address(ip)
    if address not in ipaddress.ip_network(block["cidr"]):
        return False
    return not any(address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))


def egress_allows_ip(manifests: list[dict], labels: dict[str, str], ip: str, port: int) -> bool:
    """Whether the policies selecting a pod let it open a TCP connection to ip:port."""
    policies = [p for p in policies_for(manifests, labels) if "Egress" in p["spec"]["policyTypes"]]
    assert policies, f"no egress policy selects {labels}"
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            if not port_allowed(rule, port):
                continue
            peers = rule.get("to")
            if not peers or any(ip_in_peer(peer, ip) for peer in peers):
                return True
    return False


def ingress_sources(manifests: list[dict], labels: dict[str, str], port: int) -> list[dict] | None:
    """The peers allowed into a pod on `port`; None means any source."""
    sources: list[dict] = []
    for policy in policies_for(manifests, labels):
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get("ingress", []):
            if not port_allowed(rule, port):
                continue
            if not rule.get("from"):
                return None
            sources += rule["from"]
    return sources


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a float of base units (cores or bytes)."""
    text = str(value)
    suffixes = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", text)
    assert match, f"not a quantity: {text}"
    return float(match.group(1)) * suffixes.get(match.group(2), 1) if match.group(2) else float(match.group(1))


def rendered_config(manifests: list[dict]) -> dict:
    (config_map,) = [m for m in of_kind(manifests, "ConfigMap") if "config.yaml" in m["data"]]
    return yaml.safe_load(config_map["data"]["config.yaml"])


def pod_environment(manifests: list[dict], container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment Kubernetes would give the container (secretKeyRef resolved, fieldRef faked)."""
    env: dict[str, str] = {}
    for variable, entry in env_of(container).items():
        if "value" in entry:
            env[variable] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), entry["value"])
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["secretKeyRef"]
            env[variable] = secrets[ref["name"]][ref["key"]]
        else:
            env[variable] = "pod-0"  # fieldRef (downward API)
    return env


def rendered_secrets(manifests: list[dict]) -> dict[str, dict[str, str]]:
    return {s["metadata"]["name"]: {**s.get("stringData", {}),
                                    **{k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}}
            for s in of_kind(manifests, "Secret")}


@pytest.fixture(params=list(VALUE_SETS))
def value_set(request: pytest.FixtureRequest, rendered_sets: dict[str, list[dict]]) -> Iterator[tuple[str, list[dict]]]:
    yield request.param, rendered_sets[request.param]


# ---------------------------------------------------------------------------------------------
# Lint, render, validate
# ---------------------------------------------------------------------------------------------

def test_every_ci_values_file_is_a_tested_value_set() -> None:
    on_disk = {f"ci/{p.name}" for p in (CHART / "ci").glob("*.yaml")}
    tested = {f for files in VALUE_SETS.values() for f in files}
    assert on_disk == tested


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict_passes(name: str, run_helm: Callable[..., HelmResult]) -> None:
    result = run_helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *value_args(VALUE_SETS[name]))
    assert result.returncode == 0, result.output
    assert "1 chart(s) linted, 0 chart(s) failed" in result.output


def _kube_versions() -> list[str]:
    versions = all_versions()
    oldest = [v for v in versions if v.startswith(MIN_KUBE + ".")]
    assert oldest, f"kubernetes-validate has no schemas for {MIN_KUBE} (has {versions})"
    return [oldest[0], versions[-1]]


EXPECTED_KINDS = {
    "default": {"ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler",
                "PodDisruptionBudget", "NetworkPolicy"},
    "all-in-one": {"ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler",
                   "PodDisruptionBudget", "NetworkPolicy"},
    "external-secrets": {"ConfigMap", "ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler",
                         "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"},
    "bundled-redis": {"ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler",
                      "PodDisruptionBudget", "NetworkPolicy", "StatefulSet"},
}


@pytest.mark.parametrize("kube_version", _kube_versions())
@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_manifest_validates_against_kubernetes_schemas(
    name: str, kube_version: str, rendered_sets: dict[str, list[dict]]
) -> None:
    manifests = rendered_sets[name]
    assert {m["kind"] for m in manifests} == EXPECTED_KINDS[name]
    for manifest in manifests:
        assert manifest["metadata"]["namespace"] == NAMESPACE, manifest["metadata"]["name"]
        if (manifest["apiVersion"], manifest["kind"]) in CRD_KINDS:
            check_service_monitor(manifest, manifests)
            continue
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']} (k8s {kube_version}): "
                        f"{'.'.join(str(p) for p in error.path)}: {error.message}")


def check_service_monitor(monitor: dict, manifests: list[dict]) -> None:
    """The ServiceMonitor scrapes each mesh pod exactly once, on its metrics port."""
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    port_names = {e["port"] for e in spec["endpoints"]}
    assert port_names == {"metrics"}
    assert all(e["path"] == "/metrics" for e in spec["endpoints"])
    scraped: list[str] = []
    for service in of_kind(manifests, "Service"):
        if not selects(spec["selector"], service["metadata"]["labels"]):
            continue
        if not any(p["name"] == "metrics" for p in service["spec"]["ports"]):
            continue
        scraped += [w["metadata"]["name"] for w in workloads(manifests)
                    if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(w))]
    assert sorted(scraped) == sorted(d["metadata"]["name"] for d in mesh_deployments(manifests))


def test_service_monitor_scrapes_the_all_in_one_pod_once(render: Callable[..., list[dict]]) -> None:
    manifests = render(VALUE_SETS["all-in-one"], ["metrics.serviceMonitor.enabled=true"])
    (monitor,) = of_kind(manifests, "ServiceMonitor")
    check_service_monitor(monitor, manifests)


def test_grafana_dashboard_ships_as_a_sidecar_configmap_only_when_asked(render: Callable[..., list[dict]]) -> None:
    assert not [m for m in of_kind(render(VALUE_SETS["all-in-one"]), "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")]
    manifests = render(VALUE_SETS["all-in-one"], ["metrics.grafanaDashboard.enabled=true",
                                                  "metrics.grafanaDashboard.folder=Payments"])
    (dashboard,) = [m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"]["grafana_folder"] == "Payments"
    shipped = json.loads(dashboard["data"]["giftcard-mesh.json"])
    assert shipped == json.loads((CHART / "dashboards" / "giftcard-mesh.json").read_text())


# ---------------------------------------------------------------------------------------------
# Pods: probes, hardening, resources, termination
# ---------------------------------------------------------------------------------------------

def test_every_grpc_container_has_grpc_health_probes(value_set: tuple[str, list[dict]]) -> None:
    name, manifests = value_set
    grpc_containers = [c for w in workloads(manifests) for c in containers(w)
                       if any(p["containerPort"] == GRPC_PORT for p in c.get("ports", []))]
    assert len(grpc_containers) == (1 if name == "all-in-one" else len(SERVICES))
    for container in grpc_containers:
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[probe_name]
            # A `grpc:` probe speaks grpc.health.v1 Health/Check; no service = the whole server.
            assert probe["grpc"]["port"] == GRPC_PORT, probe_name
            assert probe["grpc"].get("service", "") == "", probe_name
            assert not {"httpGet", "tcpSocket", "exec"} & set(probe), probe_name


def test_every_container_runs_non_root_read_only_without_privileges(value_set: tuple[str, list[dict]]) -> None:
    _, manifests = value_set
    for workload in workloads(manifests):
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            context = container["securityContext"]
            run_as_non_root = context.get("runAsNonRoot", pod["securityContext"].get("runAsNonRoot"))
            assert run_as_non_root is True, where
            assert context.get("runAsUser", pod["securityContext"].get("runAsUser")) not in (None, 0), where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where


def test_mesh_pods_get_a_writable_tmp_and_nothing_else_writable(value_set: tuple[str, list[dict]]) -> None:
    _, manifests = value_set
    for deployment in mesh_deployments(manifests):
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        for path, mount in mounts.items():
            if path != "/tmp":
                assert mount.get("readOnly") is True, path


def test_every_workload_sets_resource_requests_and_limits(value_set: tuple[str, list[dict]]) -> None:
    _, manifests = value_set
    for workload in workloads(manifests):
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{where} {kind}"
            for key in ("cpu", "memory"):
                assert quantity(resources["requests"][key]) <= quantity(resources["limits"][key]), f"{where} {key}"


def test_termination_grace_outlasts_prestop_sleep_plus_drain(value_set: tuple[str, list[dict]]) -> None:
    _, manifests = value_set
    drain = rendered_config(manifests)["grpc"]["shutdown_grace_seconds"]
    for deployment in mesh_deployments(manifests):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        assert pod["terminationGracePeriodSeconds"] > drain + int(command[1])


def test_termination_grace_follows_a_longer_drain(render: Callable[..., list[dict]]) -> None:
    manifests = render(sets=["shutdown.drainGraceSeconds=60", "shutdown.preStopSleepSeconds=10"])
    assert rendered_config(manifests)["grpc"]["shutdown_grace_seconds"] == 60
    for deployment in mesh_deployments(manifests):
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60 + 10 + 10


def test_every_deployment_has_its_own_hpa_and_pdb(value_set: tuple[str, list[dict]]) -> None:
    name, manifests = value_set
    hpas = by_name(manifests, "HorizontalPodAutoscaler")
    pdbs = of_kind(manifests, "PodDisruptionBudget")
    fixed = FIXED_REPLICAS.get(name, {})
    deployments = of_kind(manifests, "Deployment")
    assert len(deployments) == (1 if name == "all-in-one" else len(SERVICES))
    for deployment in deployments:
        dep_name = deployment["metadata"]["name"]
        if dep_name in fixed:
            assert dep_name not in hpas
            assert deployment["spec"]["replicas"] == fixed[dep_name]
        else:
            hpa = hpas[dep_name]["spec"]
            assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep_name}
            assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
            # The HPA owns the replica count; a rendered one would reset it on every upgrade.
            assert "replicas" not in deployment["spec"]
        matching = [p for p in pdbs if selects(p["spec"]["selector"], pod_labels(deployment))]
        assert len(matching) == 1, dep_name
        # The PDB covers this Deployment's pods and no one else's.
        others = [w for w in workloads(manifests) if w is not deployment]
        assert not any(selects(matching[0]["spec"]["selector"], pod_labels(w)) for w in others)
        assert matching[0]["spec"]["maxUnavailable"] == 1
    assert len(hpas) == len(deployments) - len(fixed)


def test_rollouts_never_drop_below_current_capacity(value_set: tuple[str, list[dict]]) -> None:
    _, manifests = value_set
    for deployment in of_kind(manifests, "Deployment"):
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_a_service_override_can_turn_autoscaling_off(render: Callable[..., list[dict]]) -> None:
    manifests = render(sets=["services.refund.autoscaling.enabled=false", "services.refund.replicas=1"])
    assert "giftcard-refund" not in by_name(manifests, "HorizontalPodAutoscaler")
    assert by_name(manifests, "Deployment")["giftcard-refund"]["spec"]["replicas"] == 1
    assert "giftcard-balance" in by_name(manifests, "HorizontalPodAutoscaler")


# ---------------------------------------------------------------------------------------------
# Services, endpoints, config and secrets
# ---------------------------------------------------------------------------------------------

def test_every_service_selects_pods_that_expose_its_target_ports(value_set: tuple[str, list[dict]]) -> None:
    name, manifests = value_set
    services = by_name(manifests, "Service")
    for service_name in (f"giftcard-{s}" for s in SERVICES):
        assert service_name in services
    for service in services.values():
        targets = [w for w in workloads(manifests) if selects({"matchLabels": service["spec"]["selector"]}, pod_labels(w))]
        assert len(targets) == 1, service["metadata"]["name"]
        port_names = {p["name"] for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
    if name == "all-in-one":
        # Clients keep their addresses: every per-service Service points at the one workload.
        assert {s["spec"]["selector"]["app.kubernetes.io/component"] for s in services.values()} == {"all"}


def test_each_service_finds_the_others_through_endpoint_env(rendered_sets: dict[str, list[dict]]) -> None:
    manifests = rendered_sets["default"]
    services = by_name(manifests, "Service")
    for deployment in mesh_deployments(manifests):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        assert container["args"] == ["serve", component(deployment)]
        for service in SERVICES:
            host, port = env[f"GIFTCARD_ENDPOINTS__{service.upper()}"]["value"].split(":")
            assert host in services and int(port) == GRPC_PORT


def test_all_in_one_serves_everything_in_one_process(rendered_sets: dict[str, list[dict]]) -> None:
    (deployment,) = of_kind(rendered_sets["all-in-one"], "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["serve", "all"]
    assert not [n for n in env_of(container) if n.startswith("GIFTCARD_ENDPOINTS__")]


def test_vendor_credentials_are_mounted_into_the_gateway_only(value_set: tuple[str, list[dict]]) -> None:
    name, manifests = value_set
    mounted = []
    for deployment in mesh_deployments(manifests):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if any(m["mountPath"] == "/etc/giftcard/vendors" for m in container["volumeMounts"]):
            mounted.append(component(deployment))
    assert mounted == (["all"] if name == "all-in-one" else ["gateway"])


def test_external_secrets_are_referenced_and_no_secret_is_rendered(rendered_sets: dict[str, list[dict]]) -> None:
    manifests = rendered_sets["external-secrets"]
    assert of_kind(manifests, "Secret") == []
    for deployment in mesh_deployments(manifests):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = env_of(container)
        assert env["GIFTCARD_REDIS__PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "giftcard-redis", "key": "password"}
        assert env["GIFTCARD_SECURITY__CARD_HASH_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "giftcard-card-hash-key", "key": "key"}
        assert env["GIFTCARD_SECURITY__INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "giftcard-internal-token", "key": "token"}
        assert env["GIFTCARD_REDIS__URL"]["value"] == "rediss://giftcard-redis.example.internal:6380/0"
        assert env["GIFTCARD_REDIS__TLS"]["value"] == "true"
        assert env["GIFTCARD_TELEMETRY__OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability.svc:4317"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["merchants"]["secret"] == {
            "secretName": "giftcard-merchants", "items": [{"key": "merchants.yaml", "path": "merchants.yaml"}]}
        if component(deployment) == "gateway":
            assert volumes["vendors"]["secret"] == {"secretName": "giftcard-vendor-credentials"}


def test_generated_card_hash_key_survives_uninstall(rendered_sets: dict[str, list[dict]]) -> None:
    secrets = by_name(rendered_sets["default"], "Secret")
    key_secret = secrets["giftcard-card-hash-key"]
    assert key_secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(key_secret["data"]["card-hash-key"]) >= 32


def test_microservices_pods_get_the_internal_token_from_a_secret(value_set: tuple[str, list[dict]]) -> None:
    """security.internal_token: scheduled jobs and recovery call the other services with it, so
    every microservices-mode pod has it, from a Secret (a generated one is kept across upgrades),
    and it is never in the ConfigMap; the all-in-one pod calls in-process and has none."""
    name, manifests = value_set
    secrets = rendered_secrets(manifests)
    all_in_one = name == "all-in-one"
    for deployment in mesh_deployments(manifests):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        entry = env_of(container).get("GIFTCARD_SECURITY__INTERNAL_TOKEN")
        if all_in_one:
            assert entry is None
            continue
        assert entry is not None, component(deployment)
        assert "value" not in entry
        ref = entry["valueFrom"]["secretKeyRef"]
        if name == "external-secrets":
            assert ref == {"name": "giftcard-internal-token", "key": "token"}
        else:
            assert ref == {"name": "giftcard-internal-token", "key": "internal-token"}
            assert len(secrets[ref["name"]][ref["key"]]) >= 32
    generated = by_name(manifests, "Secret").get("giftcard-internal-token")
    assert (generated is not None) == (name in ("default", "bundled-redis"))
    config = of_kind(manifests, "ConfigMap")[0]["data"]["config.yaml"]
    assert "internal_token" not in config
    if generated is not None:
        assert secrets["giftcard-internal-token"]["internal-token"] not in config


def test_internal_token_value_is_rendered_into_the_secret_only(render: Callable[..., list[dict]]) -> None:
    token = "t0k3n-" + "x" * 40
    manifests = render(sets=[f"security.internalToken.value={token}"])
    assert rendered_secrets(manifests)["giftcard-internal-token"] == {"internal-token": token}
    assert all(token not in json.dumps(m) for m in manifests if m["kind"] != "Secret")


def test_bundled_redis_is_durable_password_protected_and_wired_in(rendered_sets: dict[str, list[dict]]) -> None:
    manifests = rendered_sets["bundled-redis"]
    (redis,) = of_kind(manifests, "StatefulSet")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    redis_secret = env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert redis_secret["name"] in by_name(manifests, "Secret")
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    service = by_name(manifests, "Service")["giftcard-redis"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(redis))
    for deployment in mesh_deployments(manifests):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["GIFTCARD_REDIS__URL"]["value"] == "redis://giftcard-redis:6379/0"
        assert env["GIFTCARD_REDIS__PASSWORD"]["valueFrom"]["secretKeyRef"] == redis_secret


def test_bundled_redis_command_line_runs_on_a_real_redis_server_and_its_probe_passes(
    rendered_sets: dict[str, list[dict]], tmp_path: Path
) -> None:
    """The rendered redis-server arguments and probe command work as written (Kubernetes
    expands $(REDIS_PASSWORD); here it is substituted the same way)."""
    (redis,) = of_kind(rendered_sets["bundled-redis"], "StatefulSet")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    password = "probe-test-password"
    args = [a.replace("$(REDIS_PASSWORD)", password).replace("/data", str(tmp_path)) for a in container["args"]]
    server = os.environ.get("GIFTCARD_TEST_REDIS_SERVER") or shutil.which("redis-server")
    assert server, "redis-server is not installed (make test installs it)"
    port = free_port()
    proc = subprocess.Popen([server, *args, "--port", str(port), "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL)
    try:
        client = redis_py.Redis(port=port, password=password, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_py.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(port=port).ping()
        client.close()
        probe = container["readinessProbe"]["exec"]["command"]
        assert probe == container["livenessProbe"]["exec"]["command"]
        env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": password}
        script = probe[2].replace("redis-cli", f"redis-cli -p {port}")
        assert subprocess.run([*probe[:2], script], env=env, timeout=10).returncode == 0
        env["REDISCLI_AUTH"] = "wrong"
        assert subprocess.run([*probe[:2], script], env=env, timeout=10).returncode != 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_config_change_rolls_the_pods(render: Callable[..., list[dict]], rendered_sets: dict[str, list[dict]]) -> None:
    def checksums(manifests: list[dict]) -> dict[str, str]:
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in of_kind(manifests, "Deployment")}

    before = checksums(rendered_sets["default"])
    after = checksums(render(sets=["config.idempotency.ttl_seconds=3600"]))
    assert before.keys() == after.keys()
    assert all(before[n] != after[n] for n in before)


@pytest.mark.parametrize("name", ["default", "bundled-redis", "external-secrets", "all-in-one"])
def test_the_app_loads_the_rendered_config_env_and_merchants(
    name: str, rendered_sets: dict[str, list[dict]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contract with common/config.py: what the chart mounts and sets is what the app reads."""
    from common.config import load_settings

    manifests = rendered_sets[name]
    secrets = rendered_secrets(manifests)
    # existingSecret sets: stand-ins for what the operator's Secrets would hold.
    secrets.setdefault("giftcard-redis", {"password": "s3cret"})
    secrets.setdefault("giftcard-card-hash-key", {"key": "k" * 48})
    secrets.setdefault("giftcard-internal-token", {"token": "t" * 48})
    secrets.setdefault("giftcard-merchants", {"merchants.yaml": "merchants: {}\n"})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(of_kind(manifests, "ConfigMap")[0]["data"]["config.yaml"])
    for deployment in mesh_deployments(manifests):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        merchants_volume = next(v for v in pod["volumes"] if v["name"] == "merchants")["secret"]
        merchants_file = tmp_path / "merchants.yaml"
        merchants_file.write_text(secrets[merchants_volume["secretName"]][merchants_volume["items"][0]["key"]])
        for variable in [v for v in os.environ if v.startswith("GIFTCARD_")]:
            monkeypatch.delenv(variable)
        for variable, value in pod_environment(manifests, container, secrets).items():
            monkeypatch.setenv(variable, value)
        assert container["env"][0] == {"name": "GIFTCARD_CONFIG", "value": "/etc/giftcard/config.yaml"}
        monkeypatch.setenv("GIFTCARD_CONFIG", str(config_file))
        monkeypatch.setenv("GIFTCARD_MERCHANTS_FILE", str(merchants_file))

        settings = load_settings()

        assert (settings.grpc.host, settings.grpc.port) == ("0.0.0.0", GRPC_PORT)
        assert (settings.metrics.host, settings.metrics.port) == ("0.0.0.0", METRICS_PORT)
        assert settings.grpc.shutdown_grace_seconds == 20
        assert settings.security.dev_mode is False and settings.security.card_hash_key is not None
        # Only these sets give Redis a password (existingSecret, or generated for the bundled one).
        assert (settings.redis.password is not None) == (name in ("external-secrets", "bundled-redis"))
        if component(deployment) != "all":
            assert set(settings.endpoints) == set(SERVICES)
        assert (settings.security.internal_token is not None) == (component(deployment) != "all")
        if name == "bundled-redis":
            assert set(settings.merchants) == {"demo-retailer", "clutch-retailer"}
            clutch = settings.merchants["clutch-retailer"]
            assert [(p.provider, p.card_prefixes) for p in clutch.providers] == [("clutch", ["603953"]), ("native", [])]
            assert clutch.redemption_mode == "PARTIAL"


def test_the_rendered_all_in_one_pod_starts_answers_its_grpc_probe_and_drains_on_sigterm(
    rendered_sets: dict[str, list[dict]], redis_url: str, tmp_path: Path
) -> None:
    """The image's entry point run with the pod's args, env and files: it binds the probe port,
    reports SERVING on grpc.health.v1 (what the kubelet's grpc probe calls), and on SIGTERM exits 0
    well within terminationGracePeriodSeconds."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    manifests = rendered_sets["all-in-one"]
    (deployment,) = of_kind(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secrets = rendered_secrets(manifests)
    (tmp_path / "config.yaml").write_text(of_kind(manifests, "ConfigMap")[0]["data"]["config.yaml"])
    (tmp_path / "merchants.yaml").write_text(secrets["giftcard-merchants"]["merchants.yaml"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTCARD_")}
    env.update(pod_environment(manifests, container, secrets))
    grpc_port, metrics_port = free_port(), free_port()
    env.update({
        "GIFTCARD_CONFIG": str(tmp_path / "config.yaml"),
        "GIFTCARD_MERCHANTS_FILE": str(tmp_path / "merchants.yaml"),
        "GIFTCARD_REDIS__URL": redis_url,  # the test's Redis stands in for redis.url
        # Ports moved off 50051/9464 so parallel runs cannot collide; the host stays as rendered.
        "GIFTCARD_GRPC__PORT": str(grpc_port),
        "GIFTCARD_METRICS__PORT": str(metrics_port),
    })
    entry_point = Path(sys.executable).parent / "giftcard"
    proc = subprocess.Popen([str(entry_point), *container["args"]], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    break
                except grpc.RpcError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        pytest.fail(f"server did not come up:\n{proc.communicate()[0].decode()}")
                    time.sleep(0.1)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with socket.create_connection(("127.0.0.1", metrics_port), timeout=5):
            pass
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=pod["terminationGracePeriodSeconds"]) == 0, proc.communicate()[0].decode()
        assert time.monotonic() - started < pod["terminationGracePeriodSeconds"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# NetworkPolicy: who reaches whom
# ---------------------------------------------------------------------------------------------

def test_every_workload_is_isolated_by_its_own_network_policy(value_set: tuple[str, list[dict]]) -> None:
    _, manifests = value_set
    for workload in workloads(manifests):
        policies = policies_for(manifests, pod_labels(workload))
        assert [p["metadata"]["name"] for p in policies] == [workload["metadata"]["name"]]
        assert sorted(policies[0]["spec"]["policyTypes"]) == ["Egress", "Ingress"]
        # Every rule names its ports: no "allow everything" rule slipped in.
        for rule in policies[0]["spec"].get("ingress", []) + policies[0]["spec"].get("egress", []):
            assert rule.get("ports"), workload["metadata"]["name"]


@pytest.mark.parametrize("name", ["default", "external-secrets", "bundled-redis"])
def test_only_mesh_pods_reach_the_gateway(name: str, rendered_sets: dict[str, list[dict]]) -> None:
    manifests = rendered_sets[name]
    gateway = by_name(manifests, "Deployment")["giftcard-gateway"]
    sources = ingress_sources(manifests, pod_labels(gateway), GRPC_PORT)
    assert sources is not None, "gateway gRPC port open to any source"
    admitted: set[str] = set()
    for peer in sources:
        pods = peer_pods(peer, manifests)
        assert pods is not None, f"gateway admits a non-pod peer: {peer}"
        admitted |= pods
    assert admitted == {f"giftcard-{s}" for s in SERVICES}
    # No other port of the gateway is open to the mesh's callers except metrics.
    for policy in policies_for(manifests, pod_labels(gateway)):
        ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ports == {GRPC_PORT, METRICS_PORT}


@pytest.mark.parametrize("name", ["default", "bundled-redis"])
def test_public_services_accept_any_client_by_default(name: str, rendered_sets: dict[str, list[dict]]) -> None:
    manifests = rendered_sets[name]
    for service in PUBLIC_SERVICES:
        deployment = by_name(manifests, "Deployment")[f"giftcard-{service}"]
        assert ingress_sources(manifests, pod_labels(deployment), GRPC_PORT) is None


def test_public_services_accept_configured_clients_and_the_mesh(rendered_sets: dict[str, list[dict]]) -> None:
    manifests = rendered_sets["external-secrets"]
    for service in PUBLIC_SERVICES:
        deployment = by_name(manifests, "Deployment")[f"giftcard-{service}"]
        sources = ingress_sources(manifests, pod_labels(deployment), GRPC_PORT)
        assert sources is not None
        assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "oms"}}} in sources
        mesh = [peer_pods(p, manifests) for p in sources if "podSelector" in p]
        assert mesh == [{f"giftcard-{s}" for s in SERVICES}]
        metrics = ingress_sources(manifests, pod_labels(deployment), METRICS_PORT)
        assert metrics == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def test_only_the_gateway_reaches_vendors(value_set: tuple[str, list[dict]]) -> None:
    name, manifests = value_set
    reaching = {component(d) for d in mesh_deployments(manifests)
                if egress_allows_ip(manifests, pod_labels(d), VENDOR_IP, 443)}
    assert reaching == ({"all"} if name == "all-in-one" else {"gateway"})
    for workload in workloads(manifests):
        labels = pod_labels(workload)
        # Not even the gateway reaches cloud metadata or arbitrary in-cluster addresses on 443.
        assert not egress_allows_ip(manifests, labels, METADATA_IP, 443), workload["metadata"]["name"]
        assert not egress_allows_ip(manifests, labels, CLUSTER_IP, 443), workload["metadata"]["name"]


def test_only_mesh_pods_reach_the_bundled_redis(rendered_sets: dict[str, list[dict]]) -> None:
    manifests = rendered_sets["bundled-redis"]
    (redis,) = of_kind(manifests, "StatefulSet")
    sources = ingress_sources(manifests, pod_labels(redis), 6379)
    assert sources is not None
    admitted = set().union(*(peer_pods(p, manifests) or {"<non-pod peer>"} for p in sources))
    assert admitted == {f"giftcard-{s}" for s in SERVICES}
    (policy,) = policies_for(manifests, pod_labels(redis))
    assert policy["spec"].get("egress", []) == []  # Redis itself talks to no one.
    for deployment in mesh_deployments(manifests):
        rules = [r for p in policies_for(manifests, pod_labels(deployment)) for r in p["spec"]["egress"]
                 if port_allowed(r, 6379)]
        assert len(rules) == 1
        assert [peer_pods(p, manifests) for p in rules[0]["to"]] == [{"giftcard-redis"}]


def test_external_redis_egress_is_limited_to_its_port_and_network(rendered_sets: dict[str, list[dict]]) -> None:
    manifests = rendered_sets["external-secrets"]
    for deployment in mesh_deployments(manifests):
        labels = pod_labels(deployment)
        assert egress_allows_ip(manifests, labels, "10.20.0.7", 6380)
        assert not egress_allows_ip(manifests, labels, "10.21.0.7", 6380)
        assert not egress_allows_ip(manifests, labels, "10.20.0.7", 6379)
    default = rendered_sets["default"]
    for deployment in mesh_deployments(default):
        assert egress_allows_ip(default, pod_labels(deployment), CLUSTER_IP, 6379)


def test_network_policies_can_be_turned_off(render: Callable[..., list[dict]]) -> None:
    assert of_kind(render(sets=["networkPolicy.enabled=false"]), "NetworkPolicy") == []


# ---------------------------------------------------------------------------------------------
# Bad values fail at install with a clear message
# ---------------------------------------------------------------------------------------------

SCHEMA_REJECTIONS = [
    (["serviceDefaults.replicas=two"], "at '/serviceDefaults/replicas': got string, want integer"),
    (["services.balance.replicas=two"], "at '/services/balance/replicas': got string, want integer"),
    (["mode=bogus"], "at '/mode': value must be one of 'microservices', 'all-in-one'"),
    (["services.balanse.replicas=1"], "additional properties 'balanse' not allowed"),
    (["redis.url=http://cache:6379"], "at '/redis/url'"),
    (["merchants.entries.acme.api_key_sha256[0]=my-plain-api-key"], "at '/merchants/entries/acme/api_key_sha256/0'"),
    (["merchants.entries.acme.api_key_sha256[0]=" + "a" * 64, "merchants.entries.acme.provider=clutch"],
     "additional properties 'provider' not allowed"),
    (["merchants.entries.acme.api_key_sha256[0]=" + "a" * 64, "merchants.entries.acme.providers[0].provider=visa"],
     "at '/merchants/entries/acme/providers/0/provider'"),
    (["serviceDefaults.resources.limits=null"], "at '/serviceDefaults/resources'"),
    (["telemetry.traceSampleRatio=2"], "at '/telemetry/traceSampleRatio'"),
    (["security.internalToken.value=short"], "at '/security/internalToken/value'"),
]


@pytest.mark.parametrize(("sets", "message"), SCHEMA_REJECTIONS, ids=[s[0][-1] for s in SCHEMA_REJECTIONS])
def test_schema_rejects_bad_values_at_template_and_lint(
    sets: list[str], message: str, run_helm: Callable[..., HelmResult]
) -> None:
    template = run_helm("template", "giftcard", str(CHART), *value_args(sets=sets))
    assert template.returncode != 0
    assert "values don't meet the specifications of the schema" in template.stderr
    assert message in template.stderr, template.stderr
    lint = run_helm("lint", str(CHART), *value_args(sets=sets))
    assert lint.returncode != 0
    assert message in lint.output, lint.output


TEMPLATE_REJECTIONS = [
    (["redis.url="], "redis.url is required (a redis:// or rediss:// URL) unless redis.bundled.enabled is true"),
    (["services.gateway.autoscaling.minReplicas=5", "services.gateway.autoscaling.maxReplicas=3"],
     "services.gateway.autoscaling: minReplicas (5) is greater than maxReplicas (3)"),
    (["merchants.existingSecret=m", "merchants.entries.acme.api_key_sha256[0]=" + "a" * 64],
     "set either merchants.existingSecret or merchants.entries, not both"),
    (["security.internalToken.existingSecret=t", "security.internalToken.value=" + "x" * 32],
     "set either security.internalToken.existingSecret or security.internalToken.value, not both"),
]


@pytest.mark.parametrize(("sets", "message"), TEMPLATE_REJECTIONS, ids=[s[0][0] for s in TEMPLATE_REJECTIONS])
def test_inconsistent_values_fail_with_the_value_to_fix(
    sets: list[str], message: str, run_helm: Callable[..., HelmResult]
) -> None:
    result = run_helm("template", "giftcard", str(CHART), *value_args(sets=sets))
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# NOTES.txt, README pointers
# ---------------------------------------------------------------------------------------------

def test_install_notes_show_a_working_grpcurl_call(run_helm: Callable[..., HelmResult]) -> None:
    result = run_helm("install", "giftcard", str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    assert result.returncode == 0, result.output
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n payments port-forward svc/giftcard-balance 50051:50051" in notes
    assert "grpcurl -plaintext localhost:50051 grpc.health.v1.Health/Check" in notes
    assert "giftcard.balance.v1.BalanceService/GetBalance" in notes
    assert '-H "authorization: Bearer $API_KEY"' in notes
    # The RPC the example calls exists in the contract.
    proto = (REPO / "protos/giftcard/balance/v1/balance.proto").read_text()
    assert re.search(r"service BalanceService\s*{[^}]*rpc GetBalance\(", proto)


# ---------------------------------------------------------------------------------------------
# Dockerfile (no container engine here: its key properties are checked by reading it)
# ---------------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in lines if line and not line.startswith("#")]


def test_dockerfile_is_multi_stage_slim_and_runs_as_a_numeric_non_root_user() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for op, a in instructions if op == "ARG" and "=" in a)
    stages = [a for op, a in instructions if op == "FROM"]
    assert len(stages) >= 2
    assert all(s.split()[0] in ("${PYTHON_IMAGE}", "python:3.11-slim") for s in stages)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    final_start = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    final = instructions[final_start:]
    users = [a for op, a in final if op == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) == 10001
    assert any(op == "COPY" and a.startswith("--from=build") for op, a in final)
    assert ("ENTRYPOINT", '["giftcard"]') in final
    assert json.loads(dict(final)["CMD"]) == ["serve", "all"]
    build = " ".join(a for op, a in instructions[:final_start] if op == "RUN")
    assert "scripts/gen_protos.py" in build  # stubs generated at build time
    assert "pip install ./api ." in build
    assert "grpcio-tools" not in " ".join(a for _, a in final)


def test_dockerignore_admits_every_package_the_image_installs() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # an allowlist
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= allowed, f"packages not in the build context: {packages - allowed}"
    for path in allowed:
        assert (REPO / path).exists(), path
    # The chart's default image is this Dockerfile's, at the chart's appVersion.
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "giftcard-mesh" and values["image"]["tag"] == ""
    assert chart["appVersion"] == pyproject["project"]["version"]
