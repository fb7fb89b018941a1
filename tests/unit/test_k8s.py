"""The Kubernetes manifests: each overlay renders (`kubectl kustomize`), validates strictly against
the Kubernetes schemas offline (kubernetes-validate), and follows the platform's rules: probes,
resources and a locked-down security context on every workload; a Service, autoscaler,
disruption budget and NetworkPolicy for the gateway and each service; callers limited to the
peers that call; a migration Job per service; a CronJob per scheduled job; and the Dockerfile the
manifests run is multi-stage and non-root.

Without kubectl the rendering tests are skipped, unless K8S_CHECK_REQUIRED=1 (`make k8s-check`,
CI), where a missing kubectl fails with what to install.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.jobs import JOBS
from shared.settings import DEFAULT_PORTS, SERVICES, SETTINGS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.32.0"  # the oldest version the manifests support (CronJob timeZone, gRPC probes)
WORKLOADS = (*SERVICES, "gateway")
METRICS_PORT = 9464

# Who calls whom (README, Architecture): Checkout holds and captures in Wallet and Points and asks
# Promotions; Wallet asks Promotions for mechanics and credits Points; Promotions credits Points
# and reads Wallet, Points and Checkout for experiment statistics; the gateway calls everyone.
CALLERS = {
    "wallet": {"gateway", "checkout", "promotions"},
    "points": {"gateway", "checkout", "wallet", "promotions"},
    "promotions": {"gateway", "checkout", "wallet"},
    "checkout": {"gateway", "promotions"},
}

Doc = dict[str, Any]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        message = (
            "kubectl (with its built-in kustomize) is not installed: the overlays in k8s/ cannot be rendered. "
            "Install kubectl >= 1.27 (https://kubernetes.io/docs/tasks/tools/) or put it on PATH."
        )
        if os.environ.get("K8S_CHECK_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@functools.cache
def _render(overlay: str, kubectl_path: str) -> tuple[Doc, ...]:
    result = subprocess.run(
        [kubectl_path, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(overlay: str) -> tuple[Doc, ...]:
    return _render(overlay, kubectl())


def of_kind(docs: tuple[Doc, ...], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(doc: Doc) -> Doc:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def selects(policy: Doc, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_validates_strictly_against_the_kubernetes_schemas(overlay: str) -> None:
    errors = []
    for doc in render(overlay):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message}")
    assert errors == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_probes_resources_and_a_locked_down_security_context(overlay: str) -> None:
    docs = render(overlay)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")]
    assert workloads
    for doc in workloads:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"
            if doc["kind"] in ("Deployment", "StatefulSet"):
                assert "readinessProbe" in container and "livenessProbe" in container, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_use_native_grpc_probes_and_the_gateway_http_ones(overlay: str) -> None:
    deployments = of_kind(render(overlay), "Deployment")
    for service in SERVICES:
        [container] = pod_spec(deployments[service])["containers"]
        port = DEFAULT_PORTS[service]
        assert {"name": "grpc", "containerPort": port, "protocol": "TCP"} in container["ports"]
        # Liveness asks the always-SERVING "liveness" entry: a lost database makes a pod unready,
        # never restarts it. Readiness follows the database.
        assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
        assert container["startupProbe"]["grpc"] == {"port": port, "service": "liveness"}
        assert container["readinessProbe"]["grpc"]["port"] == port
        assert container["readinessProbe"]["grpc"]["service"].endswith("Service")
        assert container["command"] == ["python", "-m", f"services.{service}", "serve"]
    [gateway] = pod_spec(deployments["gateway"])["containers"]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["command"] == ["python", "-m", "gateway"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_workload_has_its_service_autoscaler_budget_spread_and_policy(overlay: str) -> None:
    docs = render(overlay)
    deployments, services = of_kind(docs, "Deployment"), of_kind(docs, "Service")
    autoscalers, budgets = of_kind(docs, "HorizontalPodAutoscaler"), of_kind(docs, "PodDisruptionBudget")
    policies = of_kind(docs, "NetworkPolicy")
    for name in WORKLOADS:
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert services[name]["spec"]["selector"].items() <= labels.items(), name
        assert {p["port"] for p in services[name]["spec"]["ports"]} >= {METRICS_PORT}, name
        # The gRPC services are headless: callers resolve every ready pod and spread their calls
        # (round_robin in shared/peers.py), re-resolving as connections age out.
        assert (services[name]["spec"].get("clusterIP") == "None") == (name in SERVICES), name
        assert autoscalers[name]["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        spread = pod_spec(deployments[name])["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert [p for p in policies.values() if p["spec"]["podSelector"].get("matchLabels") and selects(p, labels)]
        annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(METRICS_PORT), name
        [container] = pod_spec(deployments[name])["containers"]
        assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in container["ports"], name
        assert container["image"].split("/")[-1].startswith("loyalty-platform:"), name
        assert [e for e in container["envFrom"] if e["configMapRef"]["name"].startswith("loyalty-config")]
        pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
        assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", name
    # Nothing is reachable unless a policy says so.
    deny = policies["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}


def _allowed_callers(policy: Doc, jobs: dict[str, Doc]) -> tuple[set[str], set[str], set[str]]:
    """(workloads, namespaces, job names) a service's policy admits on its gRPC port."""
    workloads: set[str] = set()
    namespaces: set[str] = set()
    admitted_jobs: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                namespaces.add(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
                assert ports == {"metrics"}, "another namespace may only scrape metrics"
                continue
            selector = peer["podSelector"]
            for expression in selector.get("matchExpressions", []):
                assert (expression["key"], expression["operator"]) == ("app.kubernetes.io/name", "In")
                workloads |= set(expression["values"])
            if "matchLabels" in selector:
                admitted_jobs |= {
                    name for name, job in jobs.items() if selector["matchLabels"].items() <= pod_labels(job).items()
                }
            assert ports == {"grpc"}
    return workloads, namespaces, admitted_jobs


def pod_labels(cronjob: Doc) -> dict[str, str]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def calls_in_code() -> set[tuple[str, str]]:
    """(caller, callee) pairs the services' peer adapters show (services/<caller>/adapters/<callee>_peer.py)."""
    return {
        (path.parts[-3], path.name.removesuffix("_peer.py"))
        for path in (ROOT / "services").glob("*/adapters/*_peer.py")
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_takes_calls_only_from_the_peers_that_call_it(overlay: str) -> None:
    docs = render(overlay)
    policies, cronjobs = of_kind(docs, "NetworkPolicy"), of_kind(docs, "CronJob")
    for callee, callers in CALLERS.items():
        workloads, namespaces, jobs = _allowed_callers(policies[callee], cronjobs)
        assert workloads == callers, callee
        assert namespaces == {"monitoring"}, callee
        assert jobs == {name for name, job in JOBS.items() if job.service == callee}, callee
    for caller, callee in calls_in_code():
        assert caller in CALLERS[callee], f"{caller} calls {callee} (services/{caller}/adapters) but may not"
    # Only the gateway takes traffic from outside the namespace, from the ingress controller.
    gateway = policies["gateway"]["spec"]["ingress"]
    sources = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in gateway
        for peer in rule["from"]
    }
    assert sources == {"ingress-nginx", "monitoring"}
    for name, policy in policies.items():
        if name in ("gateway", "default-deny-ingress"):
            continue
        for rule in policy["spec"].get("ingress", []):
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    assert {p["port"] for p in rule["ports"]} == {"metrics"}, name
    [ingress] = of_kind(docs, "Ingress").values()
    [path] = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"]["name"] == "gateway"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_jobs_and_a_cronjob_for_every_scheduled_job(overlay: str) -> None:
    docs = render(overlay)
    jobs, cronjobs = of_kind(docs, "Job"), of_kind(docs, "CronJob")
    for service in SERVICES:
        [container] = pod_spec(jobs[f"{service}-migrate"])["containers"]
        assert container["command"] == ["python", "-m", f"services.{service}", "migrate"]
    assert set(cronjobs) == set(JOBS)
    for name, cronjob in cronjobs.items():
        spec = cronjob["spec"]
        assert spec["concurrencyPolicy"] == "Forbid" and spec["timeZone"] == "Europe/Moscow", name
        pod = pod_spec(cronjob)
        # Retries are new pods of the same Job: the same JOB_NAME, so the same request id.
        assert pod["restartPolicy"] == "Never", name
        [container] = pod["containers"]
        assert container["command"] == ["python", "-m", "shared.jobs", name]
        job_name = next(e for e in container["env"] if e["name"] == "JOB_NAME")
        assert job_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
        assert pod_labels(cronjob)["loyalty.example.com/calls"] == JOBS[name].service
    interest = cronjobs["post-monthly-interest"]["spec"]["schedule"]
    assert interest.split()[2:4] == ["1", "*"], "monthly interest runs on the first of each month"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configuration_uses_only_declared_settings(overlay: str) -> None:
    declared = {setting.name for setting in SETTINGS}
    docs = render(overlay)
    [config] = [doc for name, doc in of_kind(docs, "ConfigMap").items() if name.startswith("loyalty-config")]
    assert set(config["data"]) <= declared
    assert config["data"]["GRPC_BIND_HOST"] == "0.0.0.0" and config["data"]["DB_AUTO_MIGRATE"] == "false"
    assert config["data"]["METRICS_PORT"] == str(METRICS_PORT)
    assert int(config["data"]["GRPC_MAX_CONNECTION_AGE_MS"]) > 0
    for doc in docs:
        if (
            doc["kind"] in ("Deployment", "Job", "CronJob")
            and doc["metadata"]["labels"].get("app.kubernetes.io/part-of") == "loyalty"
        ):
            for container in pod_spec(doc)["containers"]:
                assert {e["name"] for e in container.get("env", [])} <= declared, doc["metadata"]["name"]


def test_dev_brings_its_database_and_telemetry_and_prod_points_at_external_ones() -> None:
    dev, prod = render("dev"), render("prod")
    assert "postgres" in of_kind(dev, "StatefulSet")
    assert {"otel-collector", "jaeger"} <= set(of_kind(dev, "Deployment"))
    assert any(name.startswith("loyalty-db") for name in of_kind(dev, "Secret"))
    assert not of_kind(prod, "StatefulSet") and not of_kind(prod, "Secret")
    assert not {"otel-collector", "jaeger"} & set(of_kind(prod, "Deployment"))
    [config] = [doc for name, doc in of_kind(prod, "ConfigMap").items() if name.startswith("loyalty-config")]
    assert ".svc.cluster.local" in config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]


def test_the_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [i for i, line in enumerate(lines) if re.match(r"FROM\s", line, re.I)]
    assert len(stages) >= 2, "a build stage and a runtime stage"
    final = lines[stages[-1] :]
    users = [line.split()[1] for line in final if re.match(r"USER\s", line, re.I)]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric, non-root USER (runAsNonRoot checks the uid)"
    assert any(line.startswith("COPY --from=") for line in final), "the runtime stage takes the build's output"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "tests"} <= set(ignored)
    # The security context of the manifests matches the image's user.
    assert "runAsUser: 10001" in (K8S / "base" / "services" / "wallet.yaml").read_text()
    assert int(uid) == 10001
