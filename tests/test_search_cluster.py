"""The shipped cluster configs: Ray cluster launcher YAMLs (aws, onprem, gcp) and the KubeRay manifest.

The launcher configs are checked against the installed Ray's own schema and config checks; the KubeRay
manifest against the RayCluster CRD, which is not installed here (no network at test time either): a
trimmed copy of its schema lives in tests/data/ (source repository, path and commit in its header), and
the operator's own checks on top of the CRD are written out below, each citing where it comes from.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
DATA = Path(__file__).resolve().parent / "data"
LAUNCHER_CONFIGS = ["aws.yaml", "onprem.yaml", "gcp.yaml"]


def _launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _mlflow_server(command: str) -> dict[str, str] | None:
    """The `--option value` pairs of the `mlflow server` call in a shell command line, or None."""
    tokens = shlex.split(command)
    for i in range(len(tokens) - 1):
        if tokens[i].rsplit("/", 1)[-1] == "mlflow" and tokens[i + 1] == "server":
            options, rest = {}, tokens[i + 2:]
            while len(rest) >= 2 and rest[0].startswith("--"):
                options[rest[0]], rest = rest[1], rest[2:]
            return options
    return None


# ---------------------------------------------------------------- Ray cluster launcher (ray up)


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_cluster_yaml_matches_ray_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = _launcher(name)
    jsonschema.validate(config, schema)
    commands = " ".join(config.get("setup_commands", []))
    assert "RAY_TRAIN_V2_ENABLED=1" in commands and "NCSEARCH_CACHE_DIR" in commands


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_cluster_yaml_passes_ray_up_config_checks(name):
    # What `ray up` runs on the config before it contacts the provider: fill in the provider's
    # defaults, then the schema plus head_node_type / min_workers checks. (Ray-internal API.)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_launcher(name)))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_cluster_yaml_installs_ncsearch_from_the_mounted_checkout(name):
    config = _launcher(name)
    home = f"/home/{config['auth']['ssh_user']}"

    def remote(path: str) -> str:
        return str(Path(re.sub(r"^~", home, path)))

    checkouts = {remote(dst) for dst, src in config.get("file_mounts", {}).items() if src in (".", "./")}
    assert checkouts, f"{name}: no file_mounts entry copies this checkout ('.') to the nodes"
    installed = {remote(m.group(1)) for cmd in config.get("setup_commands", [])
                 for m in re.finditer(r"pip install\b[^;&|]*?-e\s+(\S+)", cmd)}
    assert installed & checkouts, f"{name}: setup_commands pip-install none of {sorted(checkouts)}: {installed}"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_cluster_yaml_ray_processes_run_with_train_v2(name):
    config = _launcher(name)
    exported = any("export RAY_TRAIN_V2_ENABLED=1" in cmd and ".bashrc" in cmd
                   for cmd in config.get("setup_commands", []))
    assert exported, f"{name}: setup_commands do not export RAY_TRAIN_V2_ENABLED=1 in ~/.bashrc"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [cmd for cmd in config[key] if "ray start" in cmd]
        assert starts, f"{name}: no `ray start` in {key}"
        for cmd in starts:
            before = cmd.split("ray start", 1)[0]
            assert "source ~/.bashrc" in before or "RAY_TRAIN_V2_ENABLED=1" in before, (
                f"{name}: {key} starts Ray without RAY_TRAIN_V2_ENABLED=1: {cmd}")


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_cluster_yaml_starts_mlflow_server_on_the_head(name):
    config = _launcher(name)
    head = config.get("head_setup_commands", []) + config.get("head_start_ray_commands", [])
    servers = [(cmd, _mlflow_server(cmd)) for cmd in head if _mlflow_server(cmd) is not None]
    assert len(servers) == 1, f"{name}: expected one `mlflow server` among the head commands, got {len(servers)}"
    cmd, options = servers[0]
    assert options.get("--host") == "0.0.0.0" and options.get("--port") == "5000", options
    assert options.get("--backend-store-uri", "").startswith(("sqlite:///", "postgresql://", "mysql://")), options
    # `ray up` waits for each command: a server in the foreground would never let it finish.
    assert cmd.rstrip().endswith("&") and not cmd.rstrip().endswith("&&"), f"{name}: not backgrounded: {cmd}"
    others = (config.get("setup_commands", []) + config.get("worker_setup_commands", [])
              + config.get("worker_start_ray_commands", []))
    assert not [c for c in others if _mlflow_server(c) is not None], f"{name}: mlflow server outside the head"


# ---------------------------------------------------------------- KubeRay (kubectl apply)

# tests/data/kuberay_raycluster_v1.schema.yaml: KubeRay's RayCluster CRD schema, trimmed (header).
CRD_SCHEMA = DATA / "kuberay_raycluster_v1.schema.yaml"
# KubeRay's ray-operator/controllers/ray/utils/constant.go: RayContainerIndex = 0 (the Ray container
# is the first one of each pod template), MaxRayClusterNameLength = 53.
RAY_CONTAINER_INDEX = 0
MAX_RAYCLUSTER_NAME_LENGTH = 53
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _kuberay_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d]


def _raycluster() -> dict:
    (cluster,) = [d for d in _kuberay_docs() if d.get("kind") == "RayCluster"]
    return cluster


def _groups(cluster: dict) -> list[tuple[str, dict]]:
    """(name, group spec) of the head group and every worker group."""
    spec = cluster["spec"]
    return [("head", spec["headGroupSpec"])] + [
        (g.get("groupName", f"workerGroupSpecs[{i}]"), g) for i, g in enumerate(spec.get("workerGroupSpecs", []))]


def _api_server_errors(schema: dict, value, path: str, defs: dict):
    """What the API server checks beyond the JSON schema: unknown fields (`kubectl apply` validates
    fields strictly by default; the CRD's structural schema would otherwise drop them silently) and
    duplicate keys in x-kubernetes-list-type: map lists."""
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, dict) and "properties" in schema and "additionalProperties" not in schema:
        for key in value:
            if key not in schema["properties"]:
                yield (f"{path}.{key}: unknown field (a typo, or a field the trimmed CRD copy lacks: "
                       "re-run tests/data/trim_kuberay_crd.py)")
    if isinstance(value, dict):
        for key, sub in value.items():
            subschema = schema.get("properties", {}).get(key)
            if subschema is None and isinstance(schema.get("additionalProperties"), dict):
                subschema = schema["additionalProperties"]
            if subschema is not None:
                yield from _api_server_errors(subschema, sub, f"{path}.{key}", defs)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        if schema.get("x-kubernetes-list-type") == "map":
            keys = schema["x-kubernetes-list-map-keys"]
            seen = [tuple(item.get(k, "TCP" if k == "protocol" else None) for k in keys) for item in value]
            if len(seen) != len(set(seen)):
                yield f"{path}: duplicate {keys} in {seen}"
        for i, item in enumerate(value):
            yield from _api_server_errors(schema["items"], item, f"{path}[{i}]", defs)


def test_kuberay_manifest_matches_the_raycluster_crd_schema():
    schema = yaml.safe_load(CRD_SCHEMA.read_text())
    cluster = _raycluster()
    jsonschema.Draft202012Validator(schema).validate(cluster)
    errors = list(_api_server_errors(schema, cluster, "RayCluster", schema["$defs"]))
    assert not errors, "\n".join(errors)


def test_kuberay_manifest_has_what_the_crd_and_operator_require():
    # The RayCluster CRD (ray.io/v1) of ray-project/kuberay, ray-operator/config/crd/bases/
    # ray.io_rayclusters.yaml at feeaf72facab4881ba2b179248bb67315634e229 (v1.7.0-rc.0+5):
    #   spec.required = [headGroupSpec]; headGroupSpec.required = [template];
    #   workerGroupSpecs[].required = [groupName, maxReplicas, minReplicas, template];
    #   rayStartParams: {type: object, additionalProperties: {type: string}};
    #   template.spec.required = [containers]; containers[].required = [name].
    # Kubernetes' Pod validation also needs every container's image (the CRD leaves it optional), and
    # KubeRay's ray-operator/controllers/ray/utils/validation.go (ValidateRayClusterMetadata,
    # ValidateRayClusterSpec) rejects a name that is not a DNS-1035 label of <= 53 characters, a group
    # without containers, negative or crossed min/maxReplicas and rayStartParams['labels'].
    cluster = _raycluster()
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    name = cluster["metadata"]["name"]
    assert DNS1035_LABEL.match(name) and len(name) <= MAX_RAYCLUSTER_NAME_LENGTH, name
    spec = cluster["spec"]
    assert "headGroupSpec" in spec and "template" in spec["headGroupSpec"]
    workers = spec.get("workerGroupSpecs", [])
    assert workers, "no worker groups"
    for group in workers:
        missing = {"groupName", "maxReplicas", "minReplicas", "template"} - set(group)
        assert not missing, f"worker group {group.get('groupName')}: missing {sorted(missing)}"
        low, high = group["minReplicas"], group["maxReplicas"]
        assert 0 <= low <= group.get("replicas", low) <= high, f"{group['groupName']}: replicas {group}"
    group_names = [g["groupName"] for g in workers]
    assert len(group_names) == len(set(group_names)), group_names
    for group_name, group in _groups(cluster):
        params = group.get("rayStartParams", {})
        assert isinstance(params, dict), f"{group_name}: rayStartParams is not a map"
        bad = {k: v for k, v in params.items() if not isinstance(v, str)}
        assert not bad, f"{group_name}: rayStartParams values must be strings (quote them): {bad}"
        assert "labels" not in params, f"{group_name}: use the group's labels field, not rayStartParams"
        containers = group["template"]["spec"]["containers"]
        assert containers, f"{group_name}: no containers"
        for container in containers:
            assert container.get("name") and container.get("image"), f"{group_name}: {container}"


def test_kuberay_ray_containers_install_ncsearch_with_train_v2():
    cluster = _raycluster()
    for group_name, group in _groups(cluster):
        ray_container = group["template"]["spec"]["containers"][RAY_CONTAINER_INDEX]
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        assert env.get("RAY_TRAIN_V2_ENABLED") == "1", f"{group_name}: {ray_container['name']} env {env}"
        for var in ("NCSEARCH_CACHE_DIR", "NCSEARCH_DATA_DIR"):
            mounted = [m["mountPath"] for m in ray_container.get("volumeMounts", [])]
            assert env.get(var) and any(env[var].startswith(p.rstrip("/") + "/") for p in mounted), (
                f"{group_name}: {var}={env.get(var)} is not on a mounted (shared) volume {mounted}")
        # KubeRay (ray-operator/controllers/ray/common/pod.go, BuildPod) runs the Ray container's own
        # command and args, then `&& ... ray start ...`, unless they already contain "ray start".
        own = " ".join(ray_container.get("command", []) + ray_container.get("args", []))
        assert "ray start" not in own, f"{group_name}: KubeRay would not start Ray itself: {own}"
        assert re.search(r"\bpip install\b.*(ncsearch|\$\{?NCSEARCH_PIP_SPEC\b)", own), (
            f"{group_name}: the Ray container does not pip-install ncsearch: {own!r}")
        if "NCSEARCH_PIP_SPEC" in own:
            assert env.get("NCSEARCH_PIP_SPEC"), f"{group_name}: NCSEARCH_PIP_SPEC is not set"


def test_kuberay_gpu_worker_group_gets_gpus():
    gpu_groups = [g for g in _raycluster()["spec"]["workerGroupSpecs"]
                  if "nvidia.com/gpu" in g["template"]["spec"]["containers"][RAY_CONTAINER_INDEX]
                  .get("resources", {}).get("limits", {})]
    assert gpu_groups, "no worker group has a nvidia.com/gpu limit"
    for group in gpu_groups:
        pod = group["template"]["spec"]
        limits = pod["containers"][RAY_CONTAINER_INDEX]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, limits
        assert pod.get("nodeSelector") or pod.get("affinity"), f"{group['groupName']}: no GPU node selection"
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), (
            f"{group['groupName']}: no toleration for the nvidia.com/gpu taint of GPU nodes")


def test_kuberay_head_runs_mlflow_server_behind_the_head_service():
    from mlflow.server.security_utils import is_allowed_host_header

    cluster = _raycluster()
    head = cluster["spec"]["headGroupSpec"]
    containers = head["template"]["spec"]["containers"]
    servers = [(i, c, _mlflow_server(" ".join(c.get("command", []) + c.get("args", []))))
               for i, c in enumerate(containers)]
    servers = [(i, c, opts) for i, c, opts in servers if opts is not None]
    assert len(servers) == 1, f"expected one `mlflow server` container in the head pod, got {len(servers)}"
    index, container, options = servers[0]
    assert index != RAY_CONTAINER_INDEX, "the MLflow sidecar must not take the Ray container's place"
    assert options.get("--host") == "0.0.0.0" and options.get("--port") == "5000", options
    assert 5000 in [p["containerPort"] for p in container.get("ports", [])]
    # KubeRay names the head service <name>-head-svc (utils.GenerateHeadServiceName) unless
    # headService.metadata.name is set, and adds its own ports to the ones given here.
    service = head.get("headService", {})
    service_name = service.get("metadata", {}).get("name") or f"{cluster['metadata']['name']}-head-svc"
    ports = service.get("spec", {}).get("ports", [])
    assert any(p["port"] == 5000 and p.get("targetPort", p["port"]) in (5000, "mlflow") for p in ports), ports
    # MLflow answers only Host headers it allows (default: localhost and private IPs): the service
    # name, which trials and drivers use, and localhost, which `kubectl port-forward` sends.
    hosts = [h.strip() for h in options.get("--allowed-hosts", "").split(",") if h.strip()]
    for host in (f"{service_name}:5000", "localhost:5000"):
        assert is_allowed_host_header(hosts, host), (
            f"mlflow server --allowed-hosts {options.get('--allowed-hosts')!r} refuses Host: {host}")
