"""The docker compose deployment fits together: docker-compose.yml, Dockerfile.gpu, .env.example,
.dockerignore and docker/minio-init.sh, checked against each other and against the repository.

Docker cannot run on the build machines, so nothing is built or started: the files are parsed
(PyYAML; `${VAR}` interpolated the way compose does, with the values of .env.example) and every
reference is followed: images and build contexts, volumes, commands' modules, DRL_* settings
(validated by drl_core.settings.Settings itself), credentials, the bucket, ports, GPUs.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import yaml
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from minio.helpers import check_bucket_name

from drl_core.queue import QUEUE_FOR_KIND
from drl_core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile.gpu"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"

EXPECTED_SERVICES = {"postgres", "redis", "minio", "minio-init", "api", "worker", "worker-cpu"}
HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD")


# --- reading the files ----------------------------------------------------------------------

# Compose's interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default},
# ${VAR:?error}, ${VAR?error}, $VAR.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blank lines skipped, quotes stripped)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: expected KEY=VALUE, got {line!r}"
        values[key.strip()] = value.strip().strip("'\"")
    return values


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """`value` (a YAML tree) with every string interpolated like compose does."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"]
        current = env.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and missing:
            return arg
        if op in (":?", "?") and missing:
            raise AssertionError(f"docker-compose.yml: required variable {name} is not set: {arg}")
        return current or ""

    return VARIABLE.sub(replace, value)


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in strings_in(key) + strings_in(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return [value] if isinstance(value, str) else []


def variable_uses(tree: Any) -> list[re.Match[str]]:
    return [m for s in strings_in(tree) for m in VARIABLE.finditer(s) if not m["escaped"]]


@cache
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def deployment_env() -> dict[str, str]:
    """.env.example as a team fills it in: the empty secrets get distinct values."""
    return {key: value or f"test{key.lower().replace('_', '')}" for key, value in env_example().items()}


def with_gpu1_uncommented(text: str) -> str:
    """docker-compose.yml with its commented `worker-gpu1` example turned into a service."""
    lines = text.splitlines()
    start = lines.index("  # worker-gpu1:")
    end = start + 1
    while end < len(lines) and lines[end].startswith("  #   "):
        end += 1
    uncommented = ["  " + line[len("  # "):] for line in lines[start:end]]
    return "\n".join(lines[:start] + uncommented + lines[end:])


@cache
def raw_compose(variant: str = "as shipped") -> dict[str, Any]:
    text = COMPOSE_FILE.read_text()
    if variant == "with worker-gpu1":
        text = with_gpu1_uncommented(text)
    return yaml.safe_load(text)


@cache
def compose(variant: str = "as shipped") -> dict[str, Any]:
    return interpolate(raw_compose(variant), deployment_env())


def services(variant: str = "as shipped") -> dict[str, dict[str, Any]]:
    return compose(variant)["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    """The command's words; for `sh -c SCRIPT` the words of SCRIPT."""
    words = service.get("command") or []
    if isinstance(words, str):
        words = shlex.split(words)
    if words[:2] == ["sh", "-c"]:
        return shlex.split(words[2])
    return [str(word) for word in words]


def option(words: list[str], *names: str) -> str | None:
    for index, word in enumerate(words[:-1]):
        if word in names:
            return words[index + 1]
    return None


def celery_queues(service: dict[str, Any]) -> list[str]:
    words = command(service)
    if not words or words[0] != "celery":
        return []
    return (option(words, "-Q", "--queues") or "").split(",")


def is_bind_source(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry; short ("src:dst[:mode]") or long syntax."""
    found = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            found.append((entry.get("source", ""), entry["target"]))
        else:
            source, _, rest = entry.partition(":")
            found.append((source, rest.split(":")[0]))
    return found


def published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port."""
    found = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            found.append((entry.get("host_ip", "0.0.0.0"), int(entry["published"]),
                          int(entry["target"])))
            continue
        parts = str(entry).split(":")
        assert len(parts) in (2, 3), f"port {entry!r}: expected [ADDRESS:]HOST:CONTAINER"
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        found.append((address, int(parts[-2]), int(parts[-1])))
    return found


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    deploy = service.get("deploy") or {}
    return ((deploy.get("resources") or {}).get("reservations") or {}).get("devices") or []


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container with environment `env` builds."""
    for key in [k for k in os.environ if k.startswith("DRL_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of Dockerfile.gpu, continuation lines joined."""
    logical, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def dockerfile_args() -> tuple[dict[str, str], dict[str, str]]:
    """ARG defaults declared before the FROM and after it."""
    before, after, seen_from = {}, {}, False
    for instruction, args in dockerfile():
        if instruction == "FROM":
            seen_from = True
        elif instruction == "ARG" and "=" in args:
            name, _, default = args.partition("=")
            (after if seen_from else before)[name] = default.strip('"')
    return before, after


def dockerfile_text_expanded(instruction: str) -> list[str]:
    before, after = dockerfile_args()
    values = after if instruction != "FROM" else before
    return [interpolate(args, values) for name, args in dockerfile() if name == instruction]


def cuda_tag(cuda_version: str) -> str:
    """12.6.3 -> cu126: the PyTorch wheel index of that CUDA version."""
    major, minor = cuda_version.split(".")[:2]
    return f"cu{major}{minor}"


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore `patterns` exclude `path` (last match wins, ! re-includes, a
    matched directory excludes what is under it, **/ matches at any depth)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]

    def matches(pattern: str) -> bool:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            return any(fnmatch.fnmatchcase("/".join(parts[i:n]), tail)
                       for n in range(1, len(parts) + 1) for i in range(n))
        return any(fnmatch.fnmatchcase(prefix, pattern.rstrip("/")) for prefix in prefixes)

    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if matches(pattern.lstrip("!")):
            ignored = not negated
    return ignored


def defines_name(path: Path, name: str) -> bool:
    """Whether module `path` binds `name` at top level (assignment, def, class, import, or a
    module `__getattr__` that handles it)."""
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == name for target in node.targets):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == name:
            return True
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                (alias.asname or alias.name) == name for alias in node.names):
            return True
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and any(
                isinstance(c, ast.Constant) and c.value == name for c in ast.walk(node)):
            return True  # built lazily by the module's __getattr__ (PEP 562)
    return False


# --- services, images, volumes -----------------------------------------------------------------

def test_compose_defines_the_deployment_services():
    assert set(services()) == EXPECTED_SERVICES


def test_every_service_has_a_pinned_image_or_an_existing_build():
    built = {}
    for name, service in services().items():
        build = service.get("build")
        if build:
            context = REPO / build.get("context", ".")
            assert context.is_dir(), f"services.{name}.build.context: no folder {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), \
                f"services.{name}.build.dockerfile: not found in {context}"
            built[name] = (service.get("image"), yaml.safe_dump(build, sort_keys=True))
        else:
            image = service.get("image", "")
            assert ":" in image and not image.endswith(":latest"), \
                f"services.{name}.image: expected a pinned tag, got {image!r}"
    assert {"api", "worker", "worker-cpu"} <= set(built)
    # One image for the API and every worker, so they never run different code.
    assert len(set(built.values())) == 1, f"services build different images: {built}"
    assert services()["api"]["build"]["dockerfile"] == "Dockerfile.gpu"


def test_named_volumes_are_declared_and_every_declared_one_is_used():
    used = {source for service in services().values()
            for source, _ in mounts(service) if not is_bind_source(source)}
    declared = set(compose().get("volumes") or {})
    assert used - declared == set(), "named volumes used but not declared"
    assert declared - used == set(), "named volumes declared but never mounted"


@pytest.mark.parametrize("name,data_path", [
    ("postgres", "/var/lib/postgresql/data"), ("redis", "/data"), ("minio", "/data")])
def test_stateful_services_keep_their_data_in_named_volumes(name, data_path):
    service = services()[name]
    sources = [source for source, target in mounts(service) if target == data_path]
    assert sources and not is_bind_source(sources[0]), \
        f"services.{name}: {data_path} must be a named volume, got {sources}"
    if name == "minio":
        assert data_path in command(service), "minio must serve the folder its volume holds"


def test_redis_appends_every_write_to_disk():
    words = command(services()["redis"])
    assert option(words, "--appendonly") == "yes", "queued jobs would be lost on a restart"


def test_bind_mounted_files_exist():
    for name, service in services().items():
        for source, target in mounts(service):
            if is_bind_source(source) and target != "/data":  # /data: the site's datasets
                assert (REPO / source).exists(), f"services.{name}.volumes: {source} not found"


# --- the image ------------------------------------------------------------------------------

def test_dockerfile_gpu_starts_from_a_cuda_image():
    (base,) = dockerfile_text_expanded("FROM")
    cuda_version = dockerfile_args()[0]["CUDA_VERSION"]
    assert base.startswith("nvidia/cuda:") and cuda_version in base, base


def test_dockerfile_gpu_installs_the_pinned_cuda_build_of_torch_and_torchvision():
    torch_pin = next(dep for dep in pyproject()["project"]["dependencies"]
                     if dep.startswith("torch=="))
    cuda_version = dockerfile_args()[0]["CUDA_VERSION"]
    installs = [words for run in dockerfile_text_expanded("RUN")
                if "pip" in (words := shlex.split(run)) and torch_pin in words]
    assert len(installs) == 1, f"Dockerfile.gpu must install {torch_pin} in one RUN"
    words = installs[0]
    assert "torchvision" in words
    index = option(words, "--index-url")
    assert index == f"https://download.pytorch.org/whl/{cuda_tag(cuda_version)}", \
        f"torch wheel index {index!r} does not match the base image's CUDA {cuda_version}"


def test_compose_build_args_agree_with_the_dockerfile():
    before, after = dockerfile_args()
    args = services()["api"]["build"]["args"]
    assert args["CUDA_VERSION"] == before["CUDA_VERSION"]
    assert args["TORCH_CUDA"] == after["TORCH_CUDA"] == cuda_tag(args["CUDA_VERSION"])


def test_dockerfile_gpu_installs_the_repo_editable_in_app_and_runs_unprivileged():
    steps = dockerfile()
    workdir = [args for name, args in steps if name == "WORKDIR"][-1]
    copies = [args.split() for name, args in steps if name == "COPY"]
    assert [".", workdir] in copies, "the repo (alembic.ini, migrations/) must be copied to WORKDIR"
    runs = [args for name, args in steps if name == "RUN"]
    assert any(re.search(r"pip install (-e|--editable) ", run) for run in runs), \
        "drl_core.db finds migrations/ next to the source tree: install editable"
    user = [args for name, args in steps if name == "USER"][-1]
    assert user not in ("root", "0"), "the services must not run as root"


def test_dockerignore_keeps_what_the_image_needs_and_drops_the_rest():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    packages = [p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]]
    needed = ["pyproject.toml", "README.md", "alembic.ini", "migrations/env.py",
              "migrations/versions/0001_initial.py", "examples/mnist_drl.yaml",
              "api/main.py", "worker/celery_app.py"] + [f"{p}/__init__.py" for p in packages]
    kept_out = [".git/HEAD", ".env", "runs/demo/checkpoints/ckpt_00000100.pt",
                "tests/test_compose.py", "drl_core/__pycache__/settings.cpython-311.pyc",
                "drl.egg-info/PKG-INFO", "data/mnist/train-images-idx3-ubyte.gz", ".venv/bin/python"]
    assert [p for p in needed if dockerignored(p, patterns)] == []
    assert [p for p in kept_out if not dockerignored(p, patterns)] == []


# --- commands ---------------------------------------------------------------------------------

def test_api_migrates_the_database_then_serves_the_app():
    api = services()["api"]
    script = api["command"][2] if api["command"][:2] == ["sh", "-c"] else " ".join(api["command"])
    migrate, serve = script.find("alembic upgrade head"), script.find("uvicorn")
    assert 0 <= migrate < serve, f"api command must migrate before serving: {script!r}"
    assert "&&" in script[migrate:serve], "a failed migration must stop the api from serving"
    words = command(api)
    served = words[words.index("uvicorn") + 1]
    assert served == "api.main:app"
    assert option(words, "--host") == "0.0.0.0"
    port = int(option(words, "--port"))
    assert [p[2] for p in published_ports(api)] == [port]
    probe = re.search(rf"127\.0\.0\.1:{port}(/\w+)", " ".join(api["healthcheck"]["test"]))
    assert probe, f"the api healthcheck must query port {port}"
    routes = " ".join(path.read_text() for path in (REPO / "api").rglob("*.py"))
    assert f'"{probe[1]}"' in routes, f"the api declares no route {probe[1]}"


def test_alembic_ini_finds_the_migrations():
    """`alembic upgrade head` in /app (the api's command) reads alembic.ini from there."""
    script = ScriptDirectory.from_config(AlembicConfig(str(REPO / "alembic.ini")))
    assert script.get_current_head() is not None, f"no migrations in {script.dir}"


def test_modules_in_commands_resolve_to_files_in_the_repo():
    """`api.main:app`, `worker.celery_app:celery_app`, ...: the file exists and defines the
    name at top level. (These modules are written alongside; they exist when CI runs.)"""
    references = {word for service in services().values() for word in command(service)
                  if re.fullmatch(r"[a-z_][\w.]*:[A-Za-z_]\w*", word)}
    assert {"api.main:app", "worker.celery_app:celery_app"} <= references
    for reference in sorted(references):
        module, name = reference.split(":")
        path = REPO / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{reference}: {path.relative_to(REPO)} does not exist"
        assert defines_name(path, name), f"{reference}: {path.name} defines no {name!r}"


@pytest.mark.parametrize("variant", ["as shipped", "with worker-gpu1"])
def test_each_gpu_worker_owns_one_gpu_and_runs_one_job_at_a_time(variant):
    gpu_workers = {name: s for name, s in services(variant).items() if "gpu" in celery_queues(s)}
    assert "worker" in gpu_workers
    if variant == "with worker-gpu1":
        assert "worker-gpu1" in gpu_workers
    devices_taken, node_names = [], []
    for name, service in gpu_workers.items():
        words = command(service)
        assert celery_queues(service) == ["gpu"], f"services.{name}: a GPU worker consumes gpu only"
        assert option(words, "--concurrency", "-c") == "1", f"services.{name}: concurrency"
        assert option(words, "--prefetch-multiplier") == "1", f"services.{name}: prefetch"
        assert option(words, "-A", "--app") == "worker.celery_app:celery_app"
        node_names.append(option(words, "-n", "--hostname"))
        (device,) = gpu_devices(service)
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
        ids = device.get("device_ids")
        assert ids is not None or device.get("count") == 1, f"services.{name}: one GPU"
        if ids is not None:
            assert len(ids) == 1, f"services.{name}: one GPU per worker, got {ids}"
            devices_taken.append(str(ids[0]))
        assert "NVIDIA_VISIBLE_DEVICES" not in environment(service), \
            f"services.{name}: the GPU reservation, not the environment, picks the device"
    assert len(set(devices_taken)) == len(devices_taken), f"two workers share a GPU: {devices_taken}"
    assert None not in node_names and len(set(node_names)) == len(node_names), node_names


def test_cpu_worker_consumes_the_cpu_queue_without_a_gpu():
    all_services = services()
    cpu_workers = {name: s for name, s in all_services.items() if "cpu" in celery_queues(s)}
    assert set(cpu_workers) == {"worker-cpu"}
    for name in ("worker-cpu", "api"):
        assert gpu_devices(all_services[name]) == []
        # Where nvidia is docker's default runtime, the CUDA image would otherwise get all GPUs.
        assert environment(all_services[name]).get("NVIDIA_VISIBLE_DEVICES") == "void", name


def test_every_queue_a_job_is_sent_to_has_a_worker():
    consumed = {q for service in services().values() for q in celery_queues(service)}
    routed = set(QUEUE_FOR_KIND.values())
    assert routed - consumed == set(), "jobs would wait forever on these queues"
    assert consumed - routed == set(), "workers listen on queues no job is sent to"


def test_depends_on_targets_exist_and_wait_for_health_or_completion():
    all_services = services()
    for name, service in all_services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"services.{name}.depends_on: give conditions"
        for target, spec in depends_on.items():
            assert target in all_services, f"services.{name}.depends_on: no service {target!r}"
            condition = spec.get("condition")
            assert condition in (HEALTHY, COMPLETED), f"services.{name}.depends_on.{target}"
            if condition == HEALTHY:
                assert "healthcheck" in all_services[target], f"{target} has no healthcheck"
            else:
                assert all_services[target].get("restart", "no") == "no", \
                    f"{target} is restarted, so it never completes"
    # The workers start after the api, which runs the migrations.
    for name in ("worker", "worker-cpu"):
        assert all_services[name]["depends_on"]["api"]["condition"] == HEALTHY


def test_healthchecks_probe_the_service_they_belong_to():
    probes = {"postgres": "pg_isready", "redis": "ping", "minio": "mc ready local",
              "api": "/healthz"}
    for name, probe in probes.items():
        test = services()[name]["healthcheck"]["test"]
        assert probe in " ".join(test), f"services.{name}.healthcheck: {test}"


# --- settings, secrets, bucket, ports ----------------------------------------------------------

def test_every_drl_variable_is_a_settings_field():
    fields = set(Settings.model_fields)
    names = {key for service in services().values() for key in environment(service)}
    names |= set(env_example())
    unknown = sorted(n for n in names if n.startswith("DRL_") and n[4:].lower() not in fields)
    assert unknown == [], f"DRL_ variables that drl_core.settings.Settings does not read: {unknown}"


@pytest.mark.parametrize("name", ["api", "worker", "worker-cpu"])
def test_drl_services_get_settings_that_reach_the_compose_services(name, monkeypatch):
    all_services = services()
    settings = settings_from(environment(all_services[name]), monkeypatch)
    assert settings.artifact_backend == "s3"

    database = sa.make_url(settings.resolved_database_url)
    postgres = environment(all_services["postgres"])
    assert database.drivername == "postgresql+psycopg"
    assert (database.username, database.password, database.database) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    assert (database.host, database.port) == ("postgres", 5432)

    broker = urlsplit(settings.broker_url or "")
    redis_password = option(command(all_services["redis"]), "--requirepass")
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert broker.password == redis_password

    minio = environment(all_services["minio"])
    assert settings.s3_endpoint == "minio:9000"
    assert (settings.s3_access_key, settings.s3_secret_key) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    # The API too: it checks a submitted spec's dataset files where the workers will read them
    # (the same host folder).
    assert settings.data_dir == Path("/data")
    data_mounts = {service: [source for source, target in mounts(all_services[service])
                             if target == "/data"]
                   for service in ("api", "worker", "worker-cpu")}
    assert data_mounts[name] == data_mounts["worker"] and len(data_mounts[name]) == 1, data_mounts


def test_api_has_auth_enabled(monkeypatch):
    assert settings_from(environment(services()["api"]), monkeypatch).auth_enabled is True


def test_every_compose_variable_is_documented_in_env_example():
    used = {m["braced"] or m["bare"] for m in variable_uses(raw_compose())}
    documented = set(env_example())
    assert used - documented == set(), "used in docker-compose.yml, missing from .env.example"
    assert documented - used == set(), "in .env.example, but docker-compose.yml never uses it"


def test_secrets_have_no_default_and_are_required():
    for secret in SECRETS:
        assert env_example()[secret] == "", f".env.example: {secret} must be left for the team"
        ops = {m["op"] for m in variable_uses(raw_compose()) if m["braced"] == secret}
        assert ops == {":?"}, f"docker-compose.yml: every {secret} must be ${{{secret}:?...}}"


def test_minio_init_creates_the_bucket_the_services_use():
    all_services = services()
    init = all_services["minio-init"]
    bucket = environment(init)["DRL_S3_BUCKET"]
    check_bucket_name(bucket, strict=True)
    for name in ("api", "worker", "worker-cpu"):
        assert environment(all_services[name])["DRL_S3_BUCKET"] == bucket, name
    url = urlsplit(environment(init)["MINIO_URL"])
    assert url.hostname in all_services, f"minio-init MINIO_URL: no service {url.hostname!r}"
    assert url.port in [p[2] for p in published_ports(all_services[url.hostname])]
    scripts = {target: source for source, target in mounts(init)}
    script = REPO / scripts[init["entrypoint"][-1]]
    assert re.search(r'mc mb --ignore-existing "drl/\$DRL_S3_BUCKET"', script.read_text()), \
        f"{script.name} must create $DRL_S3_BUCKET idempotently"


@pytest.mark.parametrize("variant", ["as shipped", "with worker-gpu1"])
def test_published_ports_do_not_collide(variant):
    taken: dict[int, list[tuple[str, str]]] = {}
    for name, service in services(variant).items():
        for address, host_port, _ in published_ports(service):
            for other_address, other in taken.get(host_port, []):
                assert address != other_address and "0.0.0.0" not in (address, other_address), \
                    f"port {host_port}: published by {other} and {name}"
            taken.setdefault(host_port, []).append((address, name))
