"""The deployment files, checked statically (no container engine runs here): they parse, every file they name
exists, the Dockerfile installs what `make setup` installs, their ports and RECON_* variables are the service's,
and the README documents every setting."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from recon_service.pacs.config import load_pacs_config
from recon_service.settings import Settings, settings_markdown

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTINGS = {f"RECON_{name.upper()}" for name in Settings.model_fields}
OTHER_RECON_VARIABLES = {"RECON_DEBUG"}  # read by the CLI itself, documented beside the table
HTTP_PORT, DIMSE_PORT, RAY_PORT = 8000, 11112, 6379


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _k8s_documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _kind(kind: str) -> list[dict]:
    return [d for d in _k8s_documents() if d["kind"] == kind]


def _env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


# --- they parse, and what they name exists ------------------------------------------------------------------

def test_dockerfile_is_multi_stage_non_root_with_volumes_and_health_check():
    instructions = _dockerfile()
    words = [w for w, _ in instructions]
    known = {"ARG", "FROM", "RUN", "ENV", "WORKDIR", "COPY", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "CMD"}
    assert set(words) <= known, set(words) - known
    stages = [rest for w, rest in instructions if w == "FROM"]
    assert len(stages) >= 2 and all(" AS " in s.upper() for s in stages), stages
    users = [rest for w, rest in instructions if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    volumes = json.loads(next(rest for w, rest in instructions if w == "VOLUME"))
    assert {"/data", "/models", "/cache/trt"} <= set(volumes)
    env = " ".join(rest for w, rest in instructions if w == "ENV")
    for value in ("RECON_DATA_DIR=/data", "RECON_ZOO_DIR=/models", "ORT_TENSORRT_CACHE_PATH=/cache/trt"):
        assert value in env
    assert any(w == "HEALTHCHECK" and f":{HTTP_PORT}/healthz" in rest for w, rest in instructions)
    assert any(w == "ARG" and rest.startswith("VARIANT=cpu") for w, rest in instructions)  # CPU by default
    assert 'VARIANT" = "cuda"' in " ".join(rest for w, rest in instructions if w == "RUN")


def test_every_file_the_deployment_names_exists():
    for word, rest in _dockerfile():
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"Dockerfile COPY {source}"
    compose = _compose()
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        if service.get("env_file"):
            assert (DEPLOY / "env.example").is_file()  # the template of the git-ignored .env
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    for generator in kustomization["secretGenerator"]:
        for env in generator["envs"]:
            assert (K8S / f"{env}.example").is_file(), env
    ignored = (ROOT / ".gitignore").read_text()
    assert "/deploy/.env" in ignored and "/deploy/k8s/secrets.env" in ignored  # secrets are never committed


def test_pacs_configurations_of_the_deployments_load():
    compose_pacs = load_pacs_config(DEPLOY / "compose" / "pacs.json")
    assert compose_pacs.inbound.port == DIMSE_PORT
    k8s_pacs = next(d for d in _kind("ConfigMap") if d["metadata"]["name"] == "recon-config")["data"]["pacs.json"]
    path = DEPLOY / ".k8s-pacs.json"
    try:
        path.write_text(k8s_pacs)
        assert load_pacs_config(path).inbound.port == DIMSE_PORT
    finally:
        path.unlink()


# --- the same install as `make setup` -----------------------------------------------------------------------

def _extras(text: str) -> set[str]:
    found = re.findall(r'"\.\[([a-z,]+)\]"', text)
    assert found, text
    return set(found[-1].split(","))


def test_dockerfile_installs_what_make_setup_installs():
    makefile = (ROOT / "Makefile").read_text()
    docker = " ".join(rest for w, rest in _dockerfile() if w == "RUN")
    make_torch = re.findall(r"torch==([\d.]+)", makefile)
    docker_torch = re.findall(r"torch==([\d.]+)", docker)
    assert make_torch and docker_torch and set(docker_torch) == set(make_torch), (make_torch, docker_torch)
    make_extras = _extras(re.search(r"pip install -q -e (\S+)", makefile).group(0))
    docker_extras = _extras(re.search(r'pip install --no-cache-dir "\.\[[a-z,]+\]"', docker).group(0))
    assert docker_extras == make_extras - {"dev"}, (docker_extras, make_extras)
    # the torch pin comes before the project in both
    assert docker.index("torch==") < docker.index('".[')
    assert makefile.index("torch==") < makefile.index('-e ".[')


# --- ports and settings -------------------------------------------------------------------------------------

def _serve_port(command: list[str]) -> int:
    assert command[:2] == ["recon", "serve"], command
    return int(command[command.index("--port") + 1])


def test_compose_ports_and_variables_are_the_services():
    compose = _compose()
    recon = compose["services"]["recon"]
    assert _serve_port(recon["command"]) == HTTP_PORT
    published = {int(p.split(":")[1].split()[0]) for p in recon["ports"]}
    assert published == {HTTP_PORT, DIMSE_PORT}
    assert f":{HTTP_PORT}/readyz" in " ".join(recon["healthcheck"]["test"])
    head = compose["services"]["ray-head"]["command"]
    assert head[head.index("--port") + 1] == str(RAY_PORT)
    assert recon["environment"]["RECON_RAY_ADDRESS"] == f"ray-head:{RAY_PORT}"
    worker = compose["services"]["ray-worker"]["command"]
    assert worker[worker.index("--address") + 1] == f"ray-head:{RAY_PORT}"
    variables = set()
    for service in compose["services"].values():
        variables |= {k for k in (service.get("environment") or {}) if k.startswith("RECON_")}
    variables |= {k for k in _env_file(DEPLOY / "env.example") if k.startswith("RECON_")}
    assert variables and variables <= SETTINGS, variables - SETTINGS
    Settings(**{k.removeprefix("RECON_").lower(): v for k, v in recon["environment"].items()
                if k.startswith("RECON_")})  # the values are valid settings too


def test_kubernetes_service_probes_gpus_and_network_policy():
    deployment = next(d for d in _kind("Deployment") if d["metadata"]["name"] == "recon")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": HTTP_PORT, "dimse": DIMSE_PORT} and _serve_port(container["command"]) == HTTP_PORT
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] != 0
    claims = {d["metadata"]["name"] for d in _kind("PersistentVolumeClaim")}
    for doc in _kind("Deployment") + _kind("StatefulSet") + _kind("RayCluster"):
        specs = [doc["spec"]["template"]["spec"]] if "template" in doc["spec"] else \
            [doc["spec"]["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"]
                                                                   for g in doc["spec"]["workerGroupSpecs"]]
        for spec in specs:
            for volume in spec.get("volumes", []):
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, volume
    ray = _kind("RayCluster")[0]
    for group in ray["spec"]["workerGroupSpecs"]:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "1"
    assert ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == RAY_PORT
    config = next(d for d in _kind("ConfigMap") if d["metadata"]["name"] == "recon-config")["data"]
    assert config["RECON_RAY_ADDRESS"] == f"{ray['metadata']['name']}-head-svc:{RAY_PORT}"  # KubeRay's head Service
    variables = {k for k in config if k.startswith("RECON_")}
    variables |= {k for k in _env_file(K8S / "secrets.env.example") if k.startswith("RECON_")}
    assert variables <= SETTINGS, variables - SETTINGS
    Settings(**{k.removeprefix("RECON_").lower(): v for k, v in config.items() if k.startswith("RECON_")})
    # the DICOM port: reachable only from pods of the cluster (a namespace selector, never an IP block)
    policy = next(d for d in _kind("NetworkPolicy") if d["spec"]["podSelector"]["matchLabels"] == {"app": "recon"})
    dimse_rules = [r for r in policy["spec"]["ingress"] if any(p["port"] == DIMSE_PORT for p in r.get("ports", []))]
    assert dimse_rules and all(r.get("from") and all("ipBlock" not in f for f in r["from"]) for r in dimse_rules)
    assert all(p["port"] != DIMSE_PORT for r in policy["spec"]["ingress"] if not r.get("from")
               for p in r.get("ports", []))


def test_the_probed_paths_are_the_services(tmp_path):
    from fastapi.testclient import TestClient

    from recon_service.api import create_app

    with TestClient(create_app(Settings(data_dir=tmp_path, run_workers=False, warmup=False))) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code in (200, 503)  # there, ready or not (no workers here)
        assert client.get("/nothing-here").status_code == 404


def test_every_variable_the_code_reads_is_a_documented_setting():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings:begin[^>]*-->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert block, "README: the settings table is missing"
    assert block.group(1) == settings_markdown(), "README settings table is stale: paste settings_markdown()"
    read = set()
    for path in [*ROOT.glob("recon_service/**/*.py"), *ROOT.glob("pipelines/**/*.py"), *ROOT.glob("models/**/*.py")]:
        read |= set(re.findall(r"\"(RECON_[A-Z_]+)\"", path.read_text()))
    read -= {"RECON_"}
    undocumented = {v for v in read if v not in readme}
    assert not undocumented, undocumented
    assert read <= SETTINGS | OTHER_RECON_VARIABLES, read - SETTINGS - OTHER_RECON_VARIABLES


@pytest.mark.parametrize("script", ["scripts/gpu_check.sh"])
def test_gpu_check_script_is_there_and_needed_by_no_test(script):
    text = (ROOT / script).read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "benchmarks/gpu_engines.py" in text
    for test in ROOT.glob("tests/*.py"):
        if test.name != Path(__file__).name:
            assert "gpu_check" not in test.read_text(), test
    shlex.split(text.splitlines()[-1])  # a complete last command
