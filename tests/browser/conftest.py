"""One deployment for the browser tests: ``make airflow``'s ``demo.ui.Deployment`` with the
default plan (DAG ``migration_soak``) and three small runs of ``plans/browser.yaml``,
and Debian's Chromium driven by Playwright.

The small runs are triggered through the REST API as soon as Airflow is up, so they soak
while the first tests log in and use the trigger form; each has its own environment
and its own staging database (a ``TEMPLATE`` copy of one seeded database on the default
plan's server, with its own Airflow connection: the lease is per database, so they run
side by side, next to the default plan's own database):

=========  ==========================================================================
run        how it gets there
=========  ==========================================================================
ask        one user without authorizerId after the migration, NO-GO only above 1:
           INCONCLUSIVE; ``on_inconclusive`` ask and ``require_sign_off``: a person
           answers GO, then approves the sign-off, in the UI
nogo       the same user, NO-GO above 0: breached at the first tick, rolled back
reject     healthy data, ``require_sign_off``: a person rejects the sign-off in the UI
=========  ==========================================================================

Screenshots go to ``reports/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import os
import json
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from demo import postgres, seed
from demo.faults import add_users_without_authorizer_id
from demo.ui import USERNAME, Deployment
from migration_soak.store import Store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BASE_PLAN = HERE / "plans" / "browser.yaml"
SHOTS = ROOT / "reports" / "screenshots"
USERS = 300
TIME_SCALE = 45.0  # a 15-minute tick every 20 s of wall time
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--headless"]
#: Answer a question only once it has been waiting this long: on Airflow 3.3.2 an answer
#: that re-queues the task before the scheduler has processed the exit of the worker that
#: parked it fails the task (apache/airflow#71172, see tests/e2e/test_tail.py).
SETTLE_S = 15


@dataclass(frozen=True)
class SmallRun:
    name: str
    no_go_over: int  # NO-GO when users without authorizerId > this
    drift: int  # users without authorizerId inserted after the migration
    require_sign_off: bool
    on_inconclusive: str = "ask"

    @property
    def stem(self) -> str:
        return f"browser_{self.name}"

    @property
    def dag_id(self) -> str:
        return f"migration_soak__{self.stem}"


SMALL_RUNS = [
    SmallRun("ask", no_go_over=1, drift=1, require_sign_off=True),
    SmallRun("nogo", no_go_over=0, drift=1, require_sign_off=False),
    SmallRun("reject", no_go_over=0, drift=0, require_sign_off=True),
]


def write_plans(root: Path) -> Path:
    """``<root>/plans``: the default plan (DAG ``migration_soak``) and one copy of the
    browser plan per small run."""
    plans = root / "plans"
    plans.mkdir(parents=True, exist_ok=True)
    default = ROOT / "include" / "plans" / "default.yaml"
    shutil.copy(default, plans / "default.yaml")
    lint = yaml.safe_load(default.read_text()).get("lint")
    for r in SMALL_RUNS:
        plan = yaml.safe_load(BASE_PLAN.read_text())
        if lint is not None:  # the same migration: the default plan's accepted lint findings
            plan["lint"] = lint
        plan["name"] = plan["environment"] = r.stem
        plan["connections"]["staging"] = f"staging_{r.stem}"
        plan["backup_location"] = str(root / "backups" / r.stem)
        plan["report_location"] = str(root / "reports" / r.stem)
        plan["checks"][0]["no_go"]["value"] = r.no_go_over
        plan["no_go"][0]["rule"]["value"] = r.no_go_over
        (plans / f"{r.stem}.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return plans


def _pg_connection(db: dict, database: str) -> str:
    return json.dumps({"conn_type": "postgres", "host": db["host"], "port": db["port"], "login": db["user"],
                       "password": db["password"], "schema": database})


@dataclass
class Soak:
    """The running deployment and what the tests share."""

    deployment: Deployment
    store: Store
    runs: dict[str, str] = field(default_factory=dict)  # small run name -> run id
    drift_done: set[str] = field(default_factory=set)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.deployment.url

    @property
    def af(self):
        return self.deployment.airflow

    def run_of(self, name: str) -> tuple[str, str]:
        r = next(r for r in SMALL_RUNS if r.name == name)
        return r.dag_id, self.runs[name]

    def task_states(self, name: str) -> dict[str, str | None]:
        return self.af.task_states(*self.run_of(name))

    def wait(self, what: str, predicate, timeout: float = 180, every: float = 1.0):
        """Poll ``predicate()`` until it returns something truthy; fail after ``timeout``."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            value = predicate()
            if value:
                return value
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    def pending_question(self, name: str, task_id: str) -> dict | None:
        """The run's unanswered HITL question of ``task_id``, once it has waited ``SETTLE_S``."""
        dag_id, run_id = self.run_of(name)
        details = self.af.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/hitlDetails",
                              params={"response_received": "false"}).json()["hitl_details"]
        for q in details:
            ti = q["task_instance"]
            if ti["task_id"] == task_id and ti.get("state") == "awaiting_input":
                self.timings.setdefault(f"asked_{name}_{task_id}", time.monotonic())
                if time.monotonic() - self.timings[f"asked_{name}_{task_id}"] >= SETTLE_S:
                    return q
        return None


def _drift(soak: Soak, stop: threading.Event) -> None:
    """Insert the drift users of each run once its migration has run (as test_tail does)."""
    staging = soak.deployment.info["staging"]
    while not stop.is_set() and len(soak.drift_done) < sum(1 for r in SMALL_RUNS if r.drift):
        for r in SMALL_RUNS:
            if r.drift and r.name not in soak.drift_done and r.name in soak.runs:
                try:
                    migrated = soak.store.events(soak.runs[r.name], "migrate")
                except sa.exc.ProgrammingError:  # the store's tables are not there yet
                    migrated = []
                if migrated:
                    add_users_without_authorizer_id(staging, database=r.stem, n=r.drift)
                    soak.drift_done.add(r.name)
        stop.wait(0.3)


@pytest.fixture(scope="module")
def soak(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    began = time.monotonic()
    plans = write_plans(root)
    server = postgres.start(root / "pgdata")
    stop = threading.Event()
    timings: dict[str, float] = {}
    try:
        seed.create_staging(server, "staging", users=USERS)
        conn = server.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for r in SMALL_RUNS:
                    cur.execute(f'CREATE DATABASE "{r.stem}" TEMPLATE "staging"')
        finally:
            conn.close()

        def connections(deployment: Deployment) -> dict[str, str]:
            db = deployment.info["staging"]
            return {f"AIRFLOW_CONN_STAGING_{r.stem.upper()}": _pg_connection(db, r.stem) for r in SMALL_RUNS}

        deployment = Deployment(root, users=USERS, rate=2, plans_dir=plans, prepare=connections, server=server,
                                unpause=["migration_soak"] + [r.dag_id for r in SMALL_RUNS],
                                env={"AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600"})
        with deployment:
            db = deployment.info["store"]
            engine = sa.create_engine(sa.URL.create("postgresql+psycopg2", username=db["user"],
                                                    password=db["password"], host=db["host"], port=db["port"],
                                                    database=db["database"]))
            soak = Soak(deployment, Store(engine), timings=timings)
            soak.store.create_schema()  # once here: three `load` tasks creating the tables at once race
            soak.timings["deployment_s"] = round(time.monotonic() - began, 1)
            for r in SMALL_RUNS:
                run_id = f"browser__{r.name}__{secrets.token_hex(3)}"
                soak.af.api("POST", f"/dags/{r.dag_id}/dagRuns", json={
                    "dag_run_id": run_id, "logical_date": None,
                    "conf": {"plan": r.stem, "environment": r.stem, "time_scale": TIME_SCALE,
                             "require_sign_off": r.require_sign_off, "on_inconclusive": r.on_inconclusive}})
                soak.runs[r.name] = run_id
            soak.timings["_triggered"] = time.monotonic()
            driver = threading.Thread(target=_drift, args=(soak, stop), name="drift", daemon=True)
            driver.start()
            try:
                yield soak
            finally:
                stop.set()
                driver.join(timeout=10)
                engine.dispose()
    finally:
        stop.set()
        server.stop()
        timings["total_s"] = round(time.monotonic() - began, 1)
        print(f"\nbrowser timings: {json.dumps({k: v for k, v in timings.items() if not k.startswith(('_', 'asked_'))})}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():  # as for prometheus and pgbouncer: CI must have it, a laptop may not
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI installs it")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def login_state(soak, browser, tmp_path_factory) -> dict:
    """Log in through Airflow's login form once; returns the context's storage state."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto(soak.url + "/")
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Password").fill(soak.deployment.password)
        page.screenshot(path=str(SHOTS / "01-login.png"))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(soak.url + "/", timeout=30_000)
        page.get_by_role("link", name="Dags").first.wait_for(timeout=30_000)
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture
def page(browser, login_state):
    """A logged-in page (1400 x 900)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, storage_state=login_state)
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page, name: str, **kwargs) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), **kwargs)
    return path

