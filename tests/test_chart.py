"""The Helm chart (helm/crdt-state): linted and rendered with every value set of its ci/ folder,
every manifest validated against the Kubernetes schemas, and the facts that matter asserted.

Helm itself runs as a library (helm-python-sdk: Helm v4's Go code, built as a native library,
no cluster needed); the schemas come from kubernetes-validate. Both are in pyproject's
`deploy` extra, which `make test` and `make chart-test` install; without them these tests are
skipped, and say so.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

helm = pytest.importorskip(
    "helm_python",
    reason="helm-python-sdk is not installed: `make chart-test` installs the deploy extra",
    exc_type=ImportError,
)
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate",
    reason="kubernetes-validate is not installed: `make chart-test` installs the deploy extra",
    exc_type=ImportError,
)
import jsonschema  # noqa: E402
import yaml  # noqa: E402

from crdt_state.config import ENVIRONMENT  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "crdt-state"
VALUE_SETS = {
    path.name.removesuffix("-values.yaml"): path for path in (CHART / "ci").glob("*.yaml")
}
# The oldest release the chart supports (Chart.yaml kubeVersion), a middle one, the newest the
# schemas know.
KUBERNETES_VERSIONS = ("1.25.0", "1.31.0", "1.37.0")
RELEASE = "state"
NAMESPACE = "collab"
PORT = 8001

# The Prometheus Operator's CRD is not among the Kubernetes schemas: the fields this chart
# writes, with the types monitoring.coreos.com/v1 gives them, and nothing else.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                        }
                    },
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$",
                            },
                            "scrapeTimeout": {
                                "type": "string",
                                "pattern": "^(0|(([0-9]+)(ms|s|m|h))+)$",
                            },
                        },
                    },
                },
            },
        },
    },
}

helm.disable_logging()  # `fail` messages are asserted below, not printed


@dataclass
class Rendered:
    """One value set, rendered: every manifest (hooks included) and NOTES.txt."""

    manifests: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [m for m in self.all(kind) if name is None or m["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def container(self) -> dict[str, Any]:
        containers = self.deployment["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def config(self) -> dict[str, str]:
        """The container's environment ConfigMap (envFrom)."""
        [name] = [
            source["configMapRef"]["name"]
            for source in self.container["envFrom"]
            if "configMapRef" in source
        ]
        return self.one("ConfigMap", name)["data"]

    def env(self) -> dict[str, Any]:
        """The container's environment: ConfigMap entries as values, the rest as written."""
        found: dict[str, Any] = dict(self.config)
        for entry in self.container.get("env", []):
            found[entry["name"]] = entry.get("value", entry.get("valueFrom"))
        return found


def values_of(name: str) -> dict[str, Any]:
    return yaml.safe_load(VALUE_SETS[name].read_text()) or {}


def render(values: dict[str, Any]) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: list[dict[str, Any]] = []
    notes = ""
    for template, text in files.items():
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("metadata", {})
                manifests.append(document)
    return Rendered(manifests, notes)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    return {name: render(values_of(name)) for name in VALUE_SETS}


@pytest.fixture(params=sorted(VALUE_SETS))
def each(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Iterator[Rendered]:
    yield rendered[request.param]


def decoded(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def test_value_sets_cover_the_ways_to_run_it() -> None:
    assert {"minimal", "embedded", "production", "design"} <= set(VALUE_SETS)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
@pytest.mark.parametrize("kube", KUBERNETES_VERSIONS)
def test_helm_lint_is_clean(name: str, kube: str) -> None:
    report = helm.lint(
        CHART, values_of(name), strict=True, namespace=NAMESPACE, kube_version=f"v{kube}"
    )
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); 2 warnings, 3 errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_manifest_passes_the_kubernetes_schemas(
    name: str, rendered: dict[str, Rendered]
) -> None:
    manifests = rendered[name].manifests
    assert manifests
    for manifest in manifests:
        if manifest["kind"] == "ServiceMonitor":
            jsonschema.validate(manifest, SERVICE_MONITOR_SCHEMA)
            continue
        for version in KUBERNETES_VERSIONS:
            # strict: an unknown field is an error too (a typo the API server would drop).
            kubernetes_validate.validate(manifest, version, strict=True)


def test_the_schema_check_is_not_a_formality(rendered: dict[str, Rendered]) -> None:
    deployment = json.loads(json.dumps(rendered["minimal"].deployment))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    deployment = json.loads(json.dumps(rendered["minimal"].deployment))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_probes(each: Rendered) -> None:
    container = each.container
    assert container["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    assert container["args"][:5] == ["serve", "--host", "0.0.0.0", "--port", str(PORT)]
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/health", "http"),
        "livenessProbe": ("/health", "http"),
        "readinessProbe": ("/ready", "http"),
    }
    # Liveness tolerates a process held up for a few seconds (docs/SECURITY.md: a write at
    # the limits holds it ~0.5 s) before restarting it.
    liveness = container["livenessProbe"]
    assert liveness["timeoutSeconds"] * liveness["failureThreshold"] >= 10


def test_security_context(each: Rendered) -> None:
    pods = [each.deployment["spec"]["template"]["spec"]]
    pods += [job["spec"]["template"]["spec"] for job in each.all("Job")]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            volumes = {volume["name"]: volume for volume in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], "a writable /tmp on a read-only root"
    mounts = {mount["mountPath"] for mount in each.container["volumeMounts"]}
    assert "/data" in mounts
    assert each.config["CRDT_STATE_DATA_DIR"] == "/data"
    assert each.config["GIT_WORKSPACE_ROOT"] == "/data/git"


def test_sockets_drain_before_the_pod_stops(each: Rendered) -> None:
    pod = each.deployment["spec"]["template"]["spec"]
    command = each.container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    assert pause >= 5, "endpoints must have time to drop the pod before SIGTERM"
    # After the pause (docs/OPERATIONS.md): the drain, running requests, then the last commits.
    drain = float(each.config["CRDT_STATE_DRAIN_SECONDS"])
    requests = float(each.config["CRDT_STATE_SHUTDOWN_SECONDS"])
    assert drain > 0 and requests > 0
    assert pod["terminationGracePeriodSeconds"] >= pause + drain + requests + 5


def test_one_service_port_for_http_and_websockets(each: Rendered) -> None:
    service = each.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == each.deployment["spec"]["selector"]["matchLabels"]
    assert "sessionAffinity" not in service["spec"]  # any replica serves any panel


def test_settings_are_the_servers(each: Rendered) -> None:
    """Every variable the chart sets is one `crdt-state serve --help` lists (or git's own)."""
    known = set(ENVIRONMENT) | {"GIT_SSH_COMMAND"}
    assert set(each.env()) <= known


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(
    rendered: dict[str, Rendered],
) -> None:
    for name in ("production", "design"):
        release = rendered[name]
        job = release.one("Job")
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["migrate"]
        assert container["image"] == release.container["image"]
        [database] = container["env"]
        assert database["name"] == "DATABASE_URL"
        source = database["valueFrom"]["secretKeyRef"]
        # Its pods are not the server's: the Service never routes to them.
        pod_labels = job["spec"]["template"]["metadata"]["labels"]
        selector = release.one("Service")["spec"]["selector"]
        assert not selector.items() <= pod_labels.items()
        if name == "production":
            assert source == {"name": "crdt-state-database", "key": "url"}
        else:
            # At pre-install the release's Secret does not exist yet: a hook Secret, made first.
            secret = release.one("Secret", source["name"])
            assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
            weight = int(secret["metadata"]["annotations"]["helm.sh/hook-weight"])
            assert weight < int(annotations["helm.sh/hook-weight"])
            assert decoded(secret, source["key"]) == values_of(name)["database"]["url"]
    for name in ("minimal", "embedded"):
        # The embedded store migrates itself at start.
        assert rendered[name].all("Job") == []


def test_existing_secrets_are_referenced_and_nothing_secret_is_rendered(
    rendered: dict[str, Rendered],
) -> None:
    production = rendered["production"]
    env = production.env()
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "crdt-state-database", "key": "url"}}
    assert env["REDIS_URL"] == {"secretKeyRef": {"name": "crdt-state-redis", "key": "url"}}
    assert env["JWT_SECRET_KEY"] == {"secretKeyRef": {"name": "crdt-state-jwt", "key": "hs256-key"}}
    assert env["CRDT_STATE_GIT_PUSH_URL"] == {
        "secretKeyRef": {"name": "crdt-state-git", "key": "push-url"}
    }
    assert production.all("Secret") == []
    assert env["CRDT_STATE_JWKS_URL"] == "https://id.example.com/.well-known/jwks.json"
    assert env["CRDT_STATE_JWT_ISSUER"] == "https://id.example.com/"
    assert env["CRDT_STATE_JWT_AUDIENCE"] == "crdt-state"
    assert env["CRDT_STATE_ALLOWED_ORIGINS"] == "https://app.example.com"
    assert env["CRDT_STATE_RATE_REST"] == "500"
    assert env["CRDT_STATE_ROOM_IDLE_SECONDS"] == "60"
    # ssh push: the key and known_hosts mounted, git told to use them and never to prompt.
    assert "BatchMode=yes" in env["GIT_SSH_COMMAND"]
    assert "/etc/crdt-state/ssh/ssh-privatekey" in env["GIT_SSH_COMMAND"]


def test_inline_secrets_go_to_the_charts_secret(rendered: dict[str, Rendered]) -> None:
    embedded = rendered["embedded"]
    secret = embedded.one("Secret")
    values = values_of("embedded")
    assert decoded(secret, "JWT_SECRET_KEY") == values["auth"]["jwtSecretKey"]
    assert decoded(secret, "CRDT_STATE_GIT_PUSH_URL") == values["git"]["pushUrl"]
    env = embedded.env()
    for key in ("JWT_SECRET_KEY", "CRDT_STATE_GIT_PUSH_URL"):
        assert env[key] == {"secretKeyRef": {"name": secret["metadata"]["name"], "key": key}}
    for value in embedded.config.values():
        assert "token@" not in value and values["auth"]["jwtSecretKey"] not in value
    # The JWKS (public keys) is a file from a ConfigMap of its own.
    jwks = embedded.one("ConfigMap", f"{secret['metadata']['name']}-jwks")
    assert json.loads(jwks["data"]["jwks.json"])["keys"][0]["kid"] == "k1"
    volumes = {v["name"]: v for v in embedded.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["jwks"]["configMap"]["name"] == jwks["metadata"]["name"]
    assert embedded.config["CRDT_STATE_JWKS_FILE"] == "/etc/crdt-state/jwks/jwks.json"
    assert {"mountPath": "/etc/crdt-state/jwks", "name": "jwks", "readOnly": True} in (
        embedded.container["volumeMounts"]
    )
    assert embedded.config["CRDT_STATE_JWT_ALGORITHMS"] == "HS256,EdDSA"


def test_without_any_key_the_chart_generates_one(rendered: dict[str, Rendered]) -> None:
    minimal = rendered["minimal"]
    key = decoded(minimal.one("Secret"), "JWT_SECRET_KEY")
    assert len(key) == 48 and key.isalnum()
    assert "crdt-state token" in minimal.notes


def test_design_deployment(rendered: dict[str, Rendered]) -> None:
    """The design document's Phase 3: 2 replicas on port 8001, its database, Redis, JWT secret,
    snapshot volume and resources."""
    design = rendered["design"]
    deployment = design.deployment
    assert deployment["metadata"]["name"] == "nexus-state"
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert design.container["image"] == "localhost:5001/nexus/nexus-state:latest"
    env = design.env()
    assert env["REDIS_URL"] == "redis://redis:6379/0"  # REDIS_HOST / REDIS_PORT of the design
    assert env["JWT_SECRET_KEY"] == {"secretKeyRef": {"name": "nexus-secrets", "key": "jwt-secret"}}
    assert env["DATABASE_URL"]["secretKeyRef"]["name"] == "nexus-state"
    assert decoded(design.one("Secret", "nexus-state"), "DATABASE_URL") == (
        "postgresql://nexus:nexus@postgres:5432/nexus_state"
    )
    claim = design.one("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert design.container["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2000m", "memory": "2Gi"},
    }


def test_embedded_store_runs_one_replica_on_its_claim(rendered: dict[str, Rendered]) -> None:
    for name in ("minimal", "embedded"):
        release = rendered[name]
        deployment = release.deployment
        assert deployment["spec"]["replicas"] == 1
        # Never two SQLite writers on one volume, not even during a rollout.
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        claim = release.one("PersistentVolumeClaim")
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        assert "DATABASE_URL" not in release.env() and "REDIS_URL" not in release.env()


def test_ingress_keeps_websockets_open(rendered: dict[str, Rendered]) -> None:
    production = rendered["production"]
    ingress = production.one("Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    # The user's own annotations win over the chart's.
    assert annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "7200"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["state.example.com"], "secretName": "state-example-com-tls"}
    ]
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert path["path"] == "/"  # REST and /ws/... alike
    assert path["backend"]["service"] == {
        "name": production.one("Service")["metadata"]["name"],
        "port": {"number": PORT},
    }
    embedded = rendered["embedded"].one("Ingress")
    assert not any("nginx" in key for key in embedded["metadata"].get("annotations", {}))
    assert rendered["minimal"].all("Ingress") == []


def test_autoscaling_disruption_budget_and_service_monitor(rendered: dict[str, Rendered]) -> None:
    production = rendered["production"]
    deployment = production.deployment
    assert "replicas" not in deployment["spec"], "the HPA owns the count"
    hpa = production.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    selector = deployment["spec"]["selector"]["matchLabels"]
    pdb = production.one("PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 2, "selector": {"matchLabels": selector}}
    monitor = production.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service_labels = production.one("Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    # Replicas spread over nodes; the shared Git root is ReadWriteMany.
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    assert production.one("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    # The defaults: a budget that never blocks draining a single replica, no monitor, no HPA.
    minimal = rendered["minimal"]
    assert minimal.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert minimal.all("ServiceMonitor") == [] and minimal.all("HorizontalPodAutoscaler") == []
    assert rendered["embedded"].all("PodDisruptionBudget") == []


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicas": 2}, "additional properties 'replicas'"),
        ({"auth": {"jwtSecretKey": "too-short"}}, "/auth/jwtSecretKey"),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"env": {"lower_case": "1"}}, "'lower_case' does not match pattern"),
        ({"database": {"url": "mysql://db/x"}}, "/database/url"),
        ({"allowedOrigins": ["https://app.example.com/path"]}, "/allowedOrigins/0"),
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any], path: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=path):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert any(path in error for error in report["errors"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 3}, "set database.url or database.existingSecret"),
        ({"autoscaling": {"enabled": True}}, "set database.url or database.existingSecret"),
        (
            {"replicaCount": 2, "database": {"url": "postgresql://db/x"}, "persistence": {}},
            "set redis.url, redis.existingSecret or redis.host",
        ),
        ({"workers": 2}, "set redis.url, redis.existingSecret or redis.host"),
        (
            {
                "replicaCount": 2,
                "database": {"url": "postgresql://db/x"},
                "redis": {"host": "redis"},
            },
            "ReadWriteMany",
        ),
        ({"terminationGracePeriodSeconds": 24}, "at least preStopSleepSeconds .* \\(25\\)"),
        (
            {"shutdown": {"drainSeconds": 30, "requestsSeconds": 10}},
            "at least preStopSleepSeconds .* \\(50\\)",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmRenderError, match=message):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_replicas_without_a_shared_volume_are_warned_about() -> None:
    release = render(
        {
            "replicaCount": 2,
            "database": {"url": "postgresql://db/x"},
            "redis": {"host": "redis"},
            "persistence": {"enabled": False},
        }
    )
    volumes = {v["name"]: v for v in release.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert "WARNING: the Git snapshot folder is an emptyDir" in release.notes


def test_readme_lists_every_value() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()

    def leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for key, value in tree.items():
            if isinstance(value, dict) and value:
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    missing = [key for key in leaves(defaults) if f"| `{key}` |" not in readme]
    # resources.requests.cpu and the like are documented as one row each (their parents).
    missing = [key for key in missing if not any(f"| `{p}` |" in readme for p in parents(key))]
    assert missing == []


def parents(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def test_schema_matches_the_defaults() -> None:
    """values.yaml itself is valid, and the schema knows every top-level key it has."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)
    assert set(defaults) <= set(schema["properties"])


def test_the_chart_and_the_image_agree(rendered: dict[str, Rendered]) -> None:
    """The pod runs as the image's user, on its port, with its data folder."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert "CRDT_STATE_DATA_DIR=/data" in dockerfile
    assert re.search(r"^EXPOSE 8001$", dockerfile, re.MULTILINE)
    pod = rendered["minimal"].deployment["spec"]["template"]["spec"]
    context = pod["securityContext"]
    assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user
    assert str(context["fsGroup"]) == user[1]
