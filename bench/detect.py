"""How fast is a windowed NO-GO caught, how fast does the rollback start, what does waiting cost?

Real Airflow (``airflow scheduler``, ``triggerer``, ``dag-processor``, ``api-server`` with
LocalExecutor, as ``demo.airflow_local`` starts them) on the demo stack, two variants of
the code side by side:

* ``new``: the working tree: check tasks deferred between ticks, the guard in the
  triggerer every soak minute (floor ``min_wall_seconds``), ``sustained`` windows judged on
  readings covering them (docs/guard.md);
* ``old``: ``--before-ref`` (default ``HEAD``): reschedule-mode sensors and a 15-minute guard,
  extracted with ``git archive`` into a temporary folder (nothing in the repository changes).

Detection runs: a 30- or 45-minute soak of a short plan (``bench_plan``) per fault, the
fault at soak minute 10, on the plan's NO-GO rules "> 1 % for 5 minutes" (auth error rate, the
gateway's real traffic, the demo's ``noisy`` fault at 5 % for 6 minutes, ``time_scale``
4 so a soak minute holds ~270 auth requests), "> 90 % for 2 minutes" (pool usage 95 %
from minute 10 on) and "> 80 % for 5 minutes" (a 2-minute CPU spike at 95 % that must not
trip it). Pool and CPU are gauges this script serves on its own ``/metrics`` (the
connection ``bench_metrics``): a controlled fault, not a loaded machine. Every bench soak
ends in a rollback (a GO criterion it cannot meet), so the next one starts from the same
database.

Printed per variant and fault: soak seconds from the fault's onset to the ``no_go`` event,
wall seconds from there to the start of ``rollback.notify_rollback``, false trips (a NO-GO
on the CPU spike, or on a criterion other than the fault's), worker task starts (the
Execution API's ``run`` calls of the run's task instances, from the API server's access
log: every start and every resume of a task is one), those of the guard before the fault,
and triggers held by the triggerer for the run (distinct trigger rows seen, sampled every
0.5 s, and the most at once).

``--whole-soak``: the default plan's whole 24 h on a compressed clock (``--whole-time-scale``,
default 120: 24 h in 12 minutes; no Prisma CLI), healthy, once per variant: worker task
starts in total, of the check tasks and of the guard.

    .venv/bin/python -m bench.detect                     # everything (about an hour on 2 cores)
    .venv/bin/python -m bench.detect --faults pool cpu --variants new
    .venv/bin/python -m bench.detect --faults --whole-soak

Results: printed, and written as JSON to ``--out`` (default ``.state/bench/detect.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

import sqlalchemy as sa  # noqa: E402

from demo.airflow_local import AirflowLocal, postgres_metadata_url  # noqa: E402
from demo.faults import Timeline  # noqa: E402
from demo.slack_sink import SlackSink  # noqa: E402
from demo.stack import Stack, airflow_connections  # noqa: E402
from migration_soak.store import Store  # noqa: E402

ONSET_MINUTE = 10


@dataclass(frozen=True)
class Fault:
    """A fault on the soak clock: ``what`` happens from ``onset`` for ``minutes`` (None:
    until the end) and whether the plan's NO-GO ``criterion`` must trip on it."""

    name: str
    criterion: str
    window_minutes: float
    time_scale: float
    minutes: float | None
    must_trip: bool
    what: str
    soak_minutes: int  # the plan's soak: long enough for the old guard to see it mid-soak


FAULTS = {
    "auth": Fault("auth", "no_go_auth_error_rate", 5, 4.0, 6, True, "auth error rate 5 % for 6 min (real traffic)", 30),
    "pool": Fault("pool", "no_go_pool_usage", 2, 20.0, None, True, "pool usage 95 % from then on", 45),
    "cpu": Fault("cpu", "no_go_db_cpu", 5, 20.0, 2, False, "CPU 95 % for 2 min (must not trip a 5-min rule)", 30),
}


# --- the plan -----------------------------------------------------------------------------------

def bench_plan(variant: str, soak_minutes: int) -> dict:
    """The short plan of the detection runs, in the form the variant's code accepts."""
    base = yaml.safe_load((REPO / "tests" / "faults" / "plans" / "restart.yaml").read_text())
    default = yaml.safe_load((REPO / "include" / "plans" / "default.yaml").read_text())
    auth = {**next(c for c in default["checks"] if c["id"] == "auth_error_rate"), "phases": ["hour0", "soak"]}

    def gauge(cid: str, title: str, metric: str) -> dict:
        return {"id": cid, "title": title, "unit": "ratio", "phases": ["soak"], "expect": {"op": "<", "value": 0.8},
                "source": {"kind": "openmetrics", "connection": "bench_metrics", "measure": "gauge", "metric": metric},
                "rule": "bench: a gauge served by bench/detect.py"}

    plan = {k: v for k, v in base.items() if k not in ("lint",) or variant == "new"}
    plan.update({
        "name": "detect-bench",
        "description": f"bench/detect.py: windowed NO-GO rules on a {soak_minutes}-minute soak",
        "backup_location": ".state/bench/backups",
        "report_location": ".state/bench/reports",
        "phases": [{"name": "soak", "start_hour": 0, "end_hour": soak_minutes / 60, "every_minutes": 15}],
        "verdict": {"min_coverage": 0.5, "on_inconclusive": "rollback"},
        "checks": base["checks"] + [auth, gauge("pool_usage", "Pool usage", "bench_pool_usage_ratio"),
                                    gauge("db_cpu", "Database CPU", "bench_cpu_usage_ratio")],
        "guard": ({"every_minutes": 1, "min_wall_seconds": 3} if variant == "new" else {"every_minutes": 15})
        | {"checks": ["auth_error_rate", "pool_usage", "db_cpu"]},
        # not met while the gateway is up: every bench soak rolls back, and the next starts
        # from the same database (a level no reading can meet is refused by the plan)
        "go": [{"id": "go_rolls_back", "text": "bench: always roll back", "checks": ["gateway_health"],
                "rule": {"kind": "threshold", "op": "==", "value": 0}}],
        "no_go": [
            {"id": "no_go_auth_error_rate", "text": "Error rate > 1% sostenido por > 5 minutos", "checks": ["auth_error_rate"],
             "rule": {"kind": "sustained", "op": ">", "value": 0.01, "minutes": 5}},
            {"id": "no_go_pool_usage", "text": "Connection pool > 90% for 2 minutes", "checks": ["pool_usage"],
             "rule": {"kind": "sustained", "op": ">", "value": 0.9, "minutes": 2}},
            {"id": "no_go_db_cpu", "text": "CPU > 80% for 5 minutes", "checks": ["db_cpu"],
             "rule": {"kind": "sustained", "op": ">", "value": 0.8, "minutes": 5}},
        ],
    })
    return plan


def whole_soak_plan(tree: Path) -> dict:
    """The variant's default plan, without the Prisma CLI (not what is counted here)."""
    plan = yaml.safe_load((tree / "include" / "plans" / "default.yaml").read_text())
    plan["migration"].pop("prisma_project", None)
    plan["backup_location"], plan["report_location"] = ".state/bench/backups", ".state/bench/reports"
    return plan


# --- the code under test ------------------------------------------------------------------------

@contextmanager
def code_tree(variant: str, before_ref: str):
    """The folder whose ``plugins``, ``dags`` and ``include`` a variant runs."""
    if variant == "new":
        yield REPO
        return
    # The migrations folder its own default plan names (outside include/ in older commits).
    old_plan = subprocess.run(["git", "show", f"{before_ref}:include/plans/default.yaml"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout
    migrations_dir = yaml.safe_load(old_plan)["migration"]["migrations_dir"]
    with tempfile.TemporaryDirectory(prefix="bench-detect-old-") as tmp:
        archive = subprocess.run(["git", "archive", "--format=tar", before_ref, "plugins", "dags", "include",
                                  migrations_dir], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


# --- the bench's own gauges ---------------------------------------------------------------------

class Gauges:
    """``/metrics`` with ``bench_pool_usage_ratio`` and ``bench_cpu_usage_ratio``, whose values
    follow a timeline on the soak clock once ``start(hour0, time_scale)`` is called."""

    BASE = {"bench_pool_usage_ratio": 0.3, "bench_cpu_usage_ratio": 0.3}

    def __init__(self):
        self.values = dict(self.BASE)
        self.steps: list[tuple[float, str, float]] = []  # (soak minute, metric, value)
        self.applied: list[tuple[str, float, datetime]] = []
        gauges = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = "".join(f"# TYPE {k} gauge\n{k} {v}\n" for k, v in gauges.values.items()).encode()
                self.send_response(200 if self.path.startswith("/metrics") else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self._stop = threading.Event()

    def connection(self) -> str:
        return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port, "schema": "http"})

    def play(self, steps, hour0: datetime, time_scale: float) -> None:
        self._stop = threading.Event()
        self.applied = []

        stop = self._stop

        def run():
            for minute, metric, value in steps:
                due = hour0.timestamp() + minute * 60 / time_scale
                if stop.wait(max(0.0, due - time.time())):
                    return
                self.values[metric] = value
                self.applied.append((metric, value, datetime.now(timezone.utc)))

        threading.Thread(target=run, daemon=True).start()

    def reset(self) -> None:
        self._stop.set()
        self.values = dict(self.BASE)

    def close(self) -> None:
        self.reset()
        self.server.shutdown()


# --- one deployment, several runs ---------------------------------------------------------------

#: A task process starting (a first start or a resume from deferral or reschedule): its call
#: of the Execution API's ``run`` endpoint, in the API server's access log.
RUN_CALL = re.compile(r"^(\S+) .*method=PATCH path=/execution/task-instances/([0-9a-f-]+)/run .*status_code=200")


@dataclass
class RunResult:
    variant: str
    case: str
    run_id: str
    time_scale: float
    run_state: str
    decision: str | None
    no_go: str | None
    onset_soak_s: float | None = None
    detect_soak_s: float | None = None
    rollback_wall_s: float | None = None
    false_trip: bool = False
    worker_starts: int = 0
    check_starts: int = 0
    guard_starts: int = 0
    guard_starts_before_fault: int = 0
    triggers_seen: int = 0
    triggers_max_at_once: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class TriggerSampler(threading.Thread):
    """Triggers held for one run: distinct trigger rows, and the most at once."""

    def __init__(self, metadata_url: str, run_id: str):
        super().__init__(daemon=True)
        self.engine = sa.create_engine(metadata_url, pool_size=1)
        self.run_id = run_id
        self.seen: set[int] = set()
        self.max_at_once = 0
        self.stop = threading.Event()

    def run(self):
        q = sa.text("SELECT t.id FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id WHERE ti.run_id = :r")
        while not self.stop.wait(0.5):
            try:
                with self.engine.connect() as conn:
                    ids = {r[0] for r in conn.execute(q, {"r": self.run_id})}
            except sa.exc.SQLAlchemyError:
                continue
            self.seen |= ids
            self.max_at_once = max(self.max_at_once, len(ids))

    def close(self):
        self.stop.set()
        self.join(5)
        self.engine.dispose()


class Deployment:
    """A fresh demo stack and the four Airflow components running one variant's code."""

    def __init__(self, variant: str, tree: Path, workdir: Path, users: int, rate: float, plans: dict[str, dict]):
        self.variant, self.tree, self.workdir, self.users, self.rate, self.plans = variant, tree, workdir, users, rate, plans

    def __enter__(self) -> "Deployment":
        self._stack = ExitStack()
        try:
            self.sink = self._stack.enter_context(SlackSink())
            self.info = self._stack.enter_context(Stack.running(self.workdir / "stack", users=self.users, rate=self.rate))
            self.gauges = Gauges()
            self._stack.callback(self.gauges.close)
            plans_dir = self.workdir / "plans"
            plans_dir.mkdir(parents=True, exist_ok=True)
            for stem, plan in self.plans.items():
                (plans_dir / f"{stem}.yaml").write_text(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True))
            info = self.info
            env = {**airflow_connections(info), "AIRFLOW_CONN_SOAK_SLACK": self.sink.airflow_connection(),
                   "AIRFLOW_CONN_BENCH_METRICS": self.gauges.connection(),
                   "SOAK_APP_LOG": info["app_log"], "SOAK_DB_LOG": info["db_log"],
                   "PATH": os.pathsep.join([info["pg_bin_dir"], os.environ.get("PATH", "")]),
                   "MIGRATION_SOAK_PLANS_DIR": str(plans_dir),
                   "AIRFLOW__CORE__DAGS_FOLDER": str(self.tree / "dags"),
                   "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.tree / "plugins"),
                   "PYTHONPATH": os.pathsep.join([str(self.tree / "plugins"), str(REPO)])}
            self.metadata_url = postgres_metadata_url(info["store"], database=f"airflow_bench_{self.variant}")
            self.af = self._stack.enter_context(AirflowLocal(self.workdir / "airflow", env, parallelism=8,
                                                             sql_alchemy_conn=self.metadata_url))
            db = info["store"]
            self.engine = sa.create_engine(sa.URL.create("postgresql+psycopg2", username=db["user"], password=db["password"],
                                                         host=db["host"], port=db["port"], database=db["database"]))
            self._stack.callback(self.engine.dispose)
            self.store = Store(self.engine)
            for stem in self.plans:
                dag_id = dag_id_for(stem)
                self.af.wait_for_dag(dag_id, timeout=300)
                self.af.unpause(dag_id)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def events(self, run_id: str, kind: str) -> list[dict]:
        try:
            return self.store.events(run_id, kind)
        except sa.exc.ProgrammingError:  # load has not created the store's tables yet
            return []

    def wait_for_hour0(self, run_id: str, dag_id: str, timeout: float = 600) -> datetime | None:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            found = self.events(run_id, "hour0")
            if found:
                return datetime.fromisoformat(found[0]["payload"]["hour0"])
            if self.af.run(dag_id, run_id)["state"] in ("success", "failed"):
                return None
            time.sleep(0.5)
        raise TimeoutError(f"{run_id}: no hour 0 within {timeout:g} s")

    def _observations(self, run_id: str):
        try:
            return self.store.observations(run_id)
        except sa.exc.ProgrammingError:
            return []

    def worker_starts(self, run_id: str) -> list[tuple[datetime, str]]:
        """(time, task id) of every task process the run started: its ``run`` calls."""
        meta = sa.create_engine(self.metadata_url, pool_size=1)
        try:
            with meta.connect() as conn:
                ids = {str(r[0]): r[1] for r in conn.execute(
                    sa.text("SELECT id, task_id FROM task_instance WHERE run_id = :r"), {"r": run_id})}
        finally:
            meta.dispose()
        out = []
        for line in self.af.log_text("api-server").splitlines():
            m = RUN_CALL.match(line)
            if m and m.group(2) in ids:
                out.append((datetime.fromisoformat(m.group(1).replace("Z", "+00:00")), ids[m.group(2)]))
        return out

    def soak(self, stem: str, case: str, time_scale: float, fault: Fault | None) -> RunResult:
        dag_id = dag_id_for(stem)
        conf = {"plan": stem, "environment": "staging", "time_scale": time_scale, "require_sign_off": False,
                "on_inconclusive": "rollback"}
        began = time.monotonic()
        run_id = self.af.trigger(dag_id, conf)
        sampler = TriggerSampler(self.metadata_url, run_id)
        sampler.start()
        timeline, onset_of = None, (lambda: None)
        try:
            hour0 = self.wait_for_hour0(run_id, dag_id)
            if hour0 is not None and fault is not None:
                onset_of, timeline = self._play(fault, hour0, time_scale)
            run = self.af.wait_for_run(dag_id, run_id, timeout=3600)
        finally:
            sampler.close()
            onset = onset_of()
            if timeline is not None:
                timeline.stop()
                self._post_fault({"fault": "noisy", "on": False})
            self.gauges.reset()
        tis = {t["task_id"]: t for t in self.af.task_instances(dag_id, run_id)}
        failed = sorted(t for t, ti in tis.items() if ti["state"] == "failed")
        no_go = self.events(run_id, "no_go")
        decision = self.events(run_id, "decision")
        result = RunResult(self.variant, case, run_id, time_scale, run["state"],
                           decision[0]["payload"]["outcome"] if decision else None,
                           no_go[0]["payload"]["criterion"] if no_go else None, wall_s=round(time.monotonic() - began, 1),
                           notes=[f"failed: {', '.join(failed)}"] if failed else [])
        verdict = self.events(run_id, "verdict")
        if verdict:
            result.notes.append("verdict: " + verdict[0]["payload"]["text"][:300])
        missed = sum(1 for o in self._observations(run_id) if o.status == "error")
        result.notes.append(f"error (missed or failed) readings: {missed}")
        starts = self.worker_starts(run_id)
        result.worker_starts = len(starts)
        result.guard_starts = sum(1 for _, t in starts if t == "guard")
        result.check_starts = sum(1 for _, t in starts if "." in t and not t.startswith("rollback."))
        result.triggers_seen, result.triggers_max_at_once = len(sampler.seen), sampler.max_at_once
        if fault is not None and hour0 is not None:
            onset_at = hour0.timestamp() + ONSET_MINUTE * 60 / time_scale if onset is None else onset.timestamp()
            result.onset_soak_s = round((onset_at - hour0.timestamp()) * time_scale, 1)
            result.guard_starts_before_fault = sum(1 for at, t in starts if t == "guard" and at.timestamp() < onset_at)
            if no_go:
                at = no_go[0]["at"].timestamp()
                result.detect_soak_s = round((at - onset_at) * time_scale, 1)
                result.false_trip = not fault.must_trip or no_go[0]["payload"]["criterion"] != fault.criterion
                notify = tis.get("rollback.notify_rollback", {}).get("start_date")
                if notify:
                    result.rollback_wall_s = round(datetime.fromisoformat(notify).timestamp() - at, 1)
        elif no_go:
            result.false_trip = True
        return result

    def _play(self, fault: Fault, hour0: datetime, time_scale: float):
        """Start the fault's timeline; returns (a function giving the onset's wall time once
        applied, the demo timeline to stop, if any)."""
        onset_minute, end = ONSET_MINUTE, (ONSET_MINUTE + fault.minutes if fault.minutes else None)
        if fault.name == "auth":
            steps = [(onset_minute / 60, "fault", {"fault": "noisy", "on": True, "error_rate": 0.05,
                                                  "webhook_errors_per_hour": 0.0})]
            steps += [(end / 60, "fault", {"fault": "noisy", "on": False})] if end else []
            timeline = Timeline(self.info["gateway_url"], None, steps).run(hour0, time_scale)
            return (lambda: timeline.records[0].applied if timeline.records else None), timeline
        metric = "bench_pool_usage_ratio" if fault.name == "pool" else "bench_cpu_usage_ratio"
        steps = [(onset_minute, metric, 0.95)] + ([(end, metric, 0.3)] if end else [])
        self.gauges.play(steps, hour0, time_scale)
        return (lambda: self.gauges.applied[0][2] if self.gauges.applied else None), None

    def _post_fault(self, body: dict) -> None:
        import requests

        try:
            requests.post(self.info["gateway_url"].rstrip("/") + "/admin/fault", json=body, timeout=10)
        except requests.RequestException:
            pass


def dag_id_for(stem: str) -> str:
    return "migration_soak" if stem == "default" else f"migration_soak__{stem}"


# --- the benchmark ------------------------------------------------------------------------------

def run_variant(variant: str, before_ref: str, faults: list[str], whole_soak: float | None, users: int, rate: float,
                workdir: Path, say) -> list[RunResult]:
    """One deployment of the variant's code: the fault soaks, then the whole default soak
    (last: a healthy soak may end GO and keep the migration; every bench soak rolls back)."""
    results = []
    with code_tree(variant, before_ref) as tree:
        plans = {f"bench_{name}": bench_plan(variant, FAULTS[name].soak_minutes) for name in faults}
        if whole_soak:
            plans["default"] = whole_soak_plan(tree)
        with Deployment(variant, tree, workdir / variant, users, rate, plans) as d:
            say(f"[{variant}] Airflow up ({d.af.base}); logs in {d.af.log_dir}")
            for name in faults:
                fault = FAULTS[name]
                say(f"[{variant}] {name}: {fault.what}, time_scale {fault.time_scale:g} ...")
                r = d.soak(f"bench_{name}", name, fault.time_scale, fault)
                say(f"[{variant}] {name}: {json.dumps(asdict(r))}")
                results.append(r)
            if whole_soak:
                say(f"[{variant}] whole 24 h default-plan soak at time_scale {whole_soak:g} ...")
                r = d.soak("default", "whole-24h", whole_soak, None)
                say(f"[{variant}] whole-24h: {json.dumps(asdict(r))}")
                results.append(r)
    return results


def table(results: list[RunResult]) -> str:
    head = ["variant", "case", "ts", "no_go", "detect soak-s", "rollback wall-s", "false trip", "worker starts",
            "check", "guard", "guard before fault", "triggers", "max held", "run"]
    rows = [[r.variant, r.case, f"{r.time_scale:g}", r.no_go or "-",
             "-" if r.detect_soak_s is None else f"{r.detect_soak_s:g}",
             "-" if r.rollback_wall_s is None else f"{r.rollback_wall_s:g}", "yes" if r.false_trip else "no",
             str(r.worker_starts), str(r.check_starts), str(r.guard_starts), str(r.guard_starts_before_fault),
             str(r.triggers_seen), str(r.triggers_max_at_once), f"{r.run_state}/{r.decision}"] for r in results]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detect", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=["new", "old"], default=["new", "old"])
    parser.add_argument("--faults", nargs="*", choices=sorted(FAULTS), default=sorted(FAULTS))
    parser.add_argument("--whole-soak", action=argparse.BooleanOptionalAction, default=True,
                        help="also soak the default plan's whole 24 h once per variant")
    parser.add_argument("--whole-time-scale", type=float, default=120.0,
                        help="time_scale of the whole soak (120: 24 h in 12 min; at 300 a real scheduler on 2 "
                             "cores misses ticks, which also means fewer starts)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the stacks and Airflow logs there (default: a temporary folder, removed)")
    parser.add_argument("--before-ref", default="HEAD", help="the git revision of the 'old' variant")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=20.0, help="the stack's load, requests/s")
    parser.add_argument("--out", type=Path, default=REPO / ".state" / "bench" / "detect.json")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(f"{datetime.now():%H:%M:%S} {text}", flush=True)

    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        workdir = args.workdir or Path(tmp)
        for variant in args.variants:
            results += run_variant(variant, args.before_ref, args.faults,
                                   args.whole_time_scale if args.whole_soak else None, args.users, args.rate,
                                   workdir, say)
    print()
    print(table(results))
    for r in results:
        if r.notes:
            print(f"{r.variant} {r.case}: " + "; ".join(r.notes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
