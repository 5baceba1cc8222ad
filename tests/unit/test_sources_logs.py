"""logs source: offsets across appends and rotation, patterns and excludes, masking,
commands that fail, and a JSON log API filtered by ``where`` (a tiny local HTTP server)."""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from migration_soak import sources
from migration_soak.exceptions import MeasurementError
from migration_soak.plan import REPO_ROOT, Check, Connections
from migration_soak.sources import SourceContext, logs

PATTERNS = ["error", "exception", "passwordHash", "undefined column"]


def check(**source) -> Check:
    source.setdefault("patterns", PATTERNS)
    return Check.model_validate({
        "id": "app_log_errors", "title": "t", "unit": "count", "rule": "test", "expect": {"op": "==", "value": 0},
        "source": {"kind": "logs", **source},
    })


def append(path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


# -- file reader --------------------------------------------------------------------------


def test_first_reading_takes_the_last_500_lines_then_only_what_was_appended(tmp_path):
    log = tmp_path / "app.log"
    append(log, *[f"INFO old error {i}" for i in range(1000)])  # 1000 matches, only 500 read
    c = check(file=str(log))
    first = logs.measure(c, SourceContext())
    assert first.value == 500 and first.evidence["lines_read"] == 500
    assert first.evidence["samples"][0] == "INFO old error 500"
    assert first.evidence["offset"] == log.stat().st_size and first.evidence["inode"] == log.stat().st_ino
    # Nothing new: nothing read.
    same = logs.measure(c, SourceContext(previous=first.evidence))
    assert (same.value, same.evidence["lines_read"], same.evidence["offset"]) == (0, 0, first.evidence["offset"])
    append(log, "INFO fine", "ERROR boom", "WARN Exception in thread")
    second = logs.measure(c, SourceContext(previous=same.evidence))
    assert second.value == 2 and second.evidence["lines_read"] == 3
    assert second.evidence["samples"] == ["ERROR boom", "WARN Exception in thread"]


def test_a_short_file_is_read_whole_the_first_time(tmp_path):
    log = tmp_path / "app.log"
    append(log, "ERROR a", "INFO b")
    m = logs.measure(check(file=str(log)), SourceContext())
    assert (m.value, m.evidence["lines_read"]) == (1, 2)
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert logs.measure(check(file=str(empty)), SourceContext()).evidence["offset"] == 0


def test_a_line_still_being_written_waits_for_its_newline(tmp_path):
    log = tmp_path / "app.log"
    append(log, "INFO a")
    first = logs.measure(check(file=str(log)), SourceContext())
    with open(log, "a") as f:
        f.write("ERROR half a li")
    m = logs.measure(check(file=str(log)), SourceContext(previous=first.evidence))
    assert m.value == 0 and m.evidence["offset"] == first.evidence["offset"]
    with open(log, "a") as f:
        f.write("ne\n")
    m = logs.measure(check(file=str(log)), SourceContext(previous=m.evidence))
    assert m.value == 1 and m.evidence["samples"] == ["ERROR half a line"]


def test_rotation_by_rename_reads_the_rest_of_the_old_file_then_the_new_one(tmp_path):
    log = tmp_path / "app.log"
    append(log, "INFO start")
    c = check(file=str(log))
    prev = logs.measure(c, SourceContext()).evidence
    append(log, "ERROR before rotation")
    os.rename(log, tmp_path / "app.log.1")  # what RotatingFileHandler does
    append(log, "ERROR after rotation", "INFO x")
    m = logs.measure(c, SourceContext(previous=prev))
    assert m.value == 2 and m.evidence["rotated"] and m.evidence["rotated_to"] == "app.log.1"
    assert m.evidence["samples"] == ["ERROR before rotation", "ERROR after rotation"]
    assert m.evidence["inode"] == log.stat().st_ino and m.evidence["offset"] == log.stat().st_size
    # The following reading continues in the new file only.
    append(log, "ERROR later")
    assert logs.measure(c, SourceContext(previous=m.evidence)).evidence["samples"] == ["ERROR later"]


def test_a_truncated_or_replaced_file_is_read_from_the_start(tmp_path):
    log = tmp_path / "app.log"
    append(log, *[f"INFO line {i}" for i in range(50)])
    c = check(file=str(log))
    prev = logs.measure(c, SourceContext()).evidence
    # copytruncate: same inode, shorter than the offset.
    log.write_text("ERROR one\n")
    m = logs.measure(c, SourceContext(previous=prev))
    assert m.value == 1 and m.evidence["rotated"] and m.evidence["offset"] == len("ERROR one\n")
    # Truncated and grown past the old offset before the next reading: same inode, longer,
    # but its first bytes changed.
    prev = m.evidence
    log.write_text("".join(f"2026-01-02 ERROR new {i}\n" for i in range(5)))
    assert log.stat().st_ino == prev["inode"] and log.stat().st_size > prev["offset"]
    m = logs.measure(c, SourceContext(previous=prev))
    assert m.value == 5 and m.evidence["rotated"] and m.evidence["lines_read"] == 5
    # Deleted and created again (the inode may be reused): read from the start.
    prev = m.evidence
    log.unlink()
    append(log, *[f"2026-01-03 ERROR again {i}" for i in range(8)])
    m = logs.measure(c, SourceContext(previous=prev))
    assert m.value == 8 and m.evidence["rotated"]


def test_appends_beyond_the_first_bytes_keep_the_offset(tmp_path):
    log = tmp_path / "app.log"
    append(log, "INFO a")  # shorter than the 128 head bytes: the head grows with the file
    c = check(file=str(log))
    prev = logs.measure(c, SourceContext()).evidence
    for i in range(40):
        append(log, f"INFO filler {i}", f"ERROR {i}")
        m = logs.measure(c, SourceContext(previous=prev))
        assert (m.value, m.evidence["lines_read"], "rotated" in m.evidence) == (1, 2, False)
        prev = m.evidence


def test_a_rotated_file_whose_last_line_had_no_newline_yet_ends_that_line(tmp_path):
    log = tmp_path / "app.log"
    append(log, "INFO start")
    prev = logs.read_file(str(log), None)[1]
    with open(log, "a") as f:
        f.write("ERROR cut by the rotation")  # the writer never ended it
    os.rename(log, tmp_path / "app.log.1")
    append(log, "ERROR in the new file")
    lines, evidence = logs.read_file(str(log), prev)
    assert lines == ["ERROR cut by the rotation", "ERROR in the new file"]
    assert evidence["rotated_to"] == "app.log.1"


def test_a_file_beside_it_with_the_old_inode_but_shorter_than_the_offset_is_not_read(tmp_path):
    log = tmp_path / "app.log"
    append(log, *[f"INFO {i}" for i in range(20)])
    prev = logs.read_file(str(log), None)[1]
    os.rename(log, tmp_path / "app.log.1")
    (tmp_path / "app.log.1").write_text("ERROR rewritten\n")  # same inode, not the file we read
    append(log, "ERROR new")
    lines, evidence = logs.read_file(str(log), prev)
    assert lines == ["ERROR new"]
    assert evidence["rotated"] and "rotated_to" not in evidence


def test_a_flood_reads_only_the_newest_bytes_and_says_how_many_it_skipped(tmp_path, monkeypatch):
    log = tmp_path / "app.log"
    append(log, "INFO a")
    prev = logs.read_file(str(log), None)[1]
    monkeypatch.setattr(logs, "MAX_READ_BYTES", 20)
    append(log, "ERROR 0123456789", "ERROR abcdefghij")  # 34 bytes: the oldest 14 are skipped
    lines, evidence = logs.read_file(str(log), prev)
    assert lines == ["89", "ERROR abcdefghij"]
    assert evidence["skipped_bytes"] == 14 and evidence["offset"] == log.stat().st_size
    # the rest of a rotated-away file is cut the same way, and both skips add up
    prev = evidence
    append(log, "ERROR 0123456789", "ERROR 9876543210")
    os.rename(log, tmp_path / "app.log.1")
    append(log, "ERROR abcdefghij", "ERROR klmnopqrst")
    lines, evidence = logs.read_file(str(log), prev)
    assert lines == ["89", "ERROR 9876543210", "ij", "ERROR klmnopqrst"]
    assert evidence["skipped_bytes"] == 28 and evidence["rotated_to"] == "app.log.1"


@pytest.mark.parametrize("special", ["dir", "/dev/null"])
def test_a_directory_or_a_device_is_not_a_log_file(tmp_path, special):
    path = str(tmp_path) if special == "dir" else special
    with pytest.raises(MeasurementError, match=f"^log file {path} is not a regular file$"):
        logs.read_file(path, None)


def test_a_missing_file_is_an_error_and_relative_paths_start_at_the_repo_root(tmp_path):
    with pytest.raises(MeasurementError, match="does not exist"):
        logs.measure(check(file=str(tmp_path / "nope.log")), SourceContext())
    with pytest.raises(MeasurementError, match=str(REPO_ROOT / "no/such.log")):
        logs.measure(check(file="no/such.log"), SourceContext())
    m = logs.measure(check(file="README.md", patterns=["GO"]), SourceContext())
    assert m.evidence["file"] == str(REPO_ROOT / "README.md") and m.value > 0


def test_an_error_observation_restarts_from_the_tail():
    # observe passes previous=None after an error, or evidence without an offset.
    assert logs.read_file("README.md", {"error": "x"})[1]["first_read"] == "last 500 lines"


# -- patterns, excludes, masking ----------------------------------------------------------


def test_patterns_are_case_insensitive_and_excludes_win(tmp_path):
    log = tmp_path / "app.log"
    append(log,
           'ERROR gateway POST /auth/login status=500 db_error=42703 undefined column: column "passwordHash" does not exist',
           "error: retrying", "WARN Exception ignored: healthcheck", "INFO all good", "INFO ERRORS=0 in last hour")
    c = check(file=str(log), patterns=["error", "exception"], exclude=["healthcheck", r"errors=0\b"])
    m = logs.measure(c, SourceContext())
    assert m.value == 2
    assert m.evidence["samples"][1] == "error: retrying"


def test_samples_are_masked_cut_and_at_most_ten(tmp_path):
    log = tmp_path / "app.log"
    append(log,
           "ERROR login failed password=hunter2 user=a",
           "ERROR upstream 401 Authorization: Bearer eyJhbGciOi.abc-def",
           'ERROR bad config {"api_key": "k-123", "token": "t0k3n"}',
           "ERROR connect postgres://app:s3cret@db:5432/staging",
           "ERROR " + "x" * 1000,
           *[f"ERROR {i}" for i in range(20)])
    m = logs.measure(check(file=str(log)), SourceContext())
    assert m.value == 25 and len(m.evidence["samples"]) == 10
    text = json.dumps(m.evidence)
    for secret in ("hunter2", "eyJhbGciOi", "k-123", "t0k3n", "s3cret"):
        assert secret not in text
    assert m.evidence["samples"][:4] == [
        "ERROR login failed password=*** user=a",
        "ERROR upstream 401 Authorization: Bearer ***",
        'ERROR bad config {"api_key": "***", "token": "***"}',
        "ERROR connect postgres://app:***@db:5432/staging",
    ]
    assert len(m.evidence["samples"][4]) == 300


def test_masking_leaves_column_names_alone():
    line = 'db_error=42703 undefined column: column "passwordHash" does not exist'
    assert logs.mask(line) == line
    assert logs.mask("passwordHash=$2b$10$abcdef") == "passwordHash=***"


# -- command reader -----------------------------------------------------------------------


def test_command_stdout_is_the_log_and_runs_without_a_shell():
    c = check(command=[sys.executable, "-c", "print('ERROR a\\nINFO b\\nerror c'); print('$(rm -rf /) ERROR d')"])
    m = logs.measure(c, SourceContext())
    assert m.value == 3 and m.evidence["reader"] == "command" and m.evidence["lines_read"] == 4
    assert "offset" not in m.evidence


def test_a_failing_command_is_an_error_with_its_stderr_tail():
    script = "import sys; sys.stderr.write('x' * 2000 + ' railway: not logged in token=abc'); sys.exit(3)"
    with pytest.raises(MeasurementError, match=r"exited 3: .*railway: not logged in token=\*\*\*") as exc:
        logs.measure(check(command=[sys.executable, "-c", script]), SourceContext())
    assert "abc" not in str(exc.value) and len(str(exc.value)) < 1000
    with pytest.raises(MeasurementError, match="not found: 'no-such-binary-xyz'"):
        logs.measure(check(command=["no-such-binary-xyz", "logs"]), SourceContext())


def test_a_command_that_hangs_times_out(monkeypatch):
    monkeypatch.setattr(logs, "TIMEOUT_S", 0.5)
    with pytest.raises(MeasurementError, match="timed out after 0.5 s"):
        logs.measure(check(command=[sys.executable, "-c", "import time; time.sleep(10)"]), SourceContext())


def test_the_dispatcher_passes_previous_evidence(tmp_path):
    plan = SimpleNamespace(connections=Connections())  # the logs source needs nothing of the plan
    log = tmp_path / "app.log"
    append(log, "ERROR a")
    c = check(file=str(log))
    first = sources.measure(c, plan, None)
    append(log, "ERROR b")
    assert sources.measure(c, plan, first.evidence).evidence["samples"] == ["ERROR b"]


# -- http reader --------------------------------------------------------------------------

TOKEN = "admin-token-not-in-evidence"
LOG_API = {
    "data": {"logs": [
        {"ts": "2026-01-01T00:00:00Z", "level": "error", "event": "login", "message": "Failed login for user a"},
        {"ts": "2026-01-01T00:00:01Z", "level": "info", "event": "login", "message": "login error retried ok"},
        {"ts": "2026-01-01T00:00:02Z", "level": "error", "event": "webhook", "message": "Webhook delivery failure: 502"},
        {"ts": "2026-01-01T00:00:03Z", "level": "error", "event": "token", "detail": {"why": "expired"}},
        {"ts": "2026-01-01T00:00:04Z", "level": "error", "event": "token", "message": "token validation error: Bearer abcdef123"},
    ]},
}


@pytest.fixture
def log_api(monkeypatch):
    """A JSON log API on 127.0.0.1 that wants ``Bearer TOKEN``; records the headers it got."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                status, body = 401, {"error": "unauthorized"}
            elif self.path.startswith("/admin/logs"):
                status, body = 200, LOG_API
            elif self.path == "/text":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"not json")
                return
            else:
                status, body = 404, {"error": "not found"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": server.server_address[1], "schema": "http",
            "password": TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_AUTHORIZER", json.dumps(conn))
    yield seen
    server.shutdown()
    server.server_close()


def http_check(**http) -> Check:
    http = {"connection": "soak_authorizer", "endpoint": "/admin/logs?limit=500", "items": "data.logs", **http}
    return check(http=http, patterns=["fail", "error", "expired"])


def test_http_entries_filtered_by_where_with_a_bearer_token(log_api):
    m = logs.measure(http_check(where={"level": "error"}), SourceContext())
    # Entries 0, 2, 4 by message; entry 3 has no message: its JSON holds "expired".
    assert m.value == 4 and m.evidence["entries"] == 5 and m.evidence["kept"] == 4
    assert m.evidence["samples"][3] == "token validation error: Bearer ***"
    assert log_api[-1] == {"path": "/admin/logs?limit=500", "authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in json.dumps(m.evidence)
    webhooks = logs.measure(http_check(where={"level": "error", "event": "webhook"}), SourceContext())
    assert webhooks.value == 1 and webhooks.evidence["samples"] == ["Webhook delivery failure: 502"]
    everything = logs.measure(http_check(), SourceContext())
    assert everything.value == 5  # "login error retried ok" counts without the level filter


def test_http_errors(log_api, monkeypatch):
    with pytest.raises(MeasurementError, match="no 'data.entries' in the answer"):
        logs.measure(http_check(items="data.entries"), SourceContext())
    with pytest.raises(MeasurementError, match="'data' is a dict, not a list"):
        logs.measure(http_check(items="data"), SourceContext())
    with pytest.raises(MeasurementError, match="HTTP 404"):
        logs.measure(http_check(endpoint="/nope"), SourceContext())
    with pytest.raises(MeasurementError, match="did not answer JSON"):
        logs.measure(http_check(endpoint="/text"), SourceContext())
    conn = json.loads(os.environ["AIRFLOW_CONN_SOAK_AUTHORIZER"])
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_AUTHORIZER", json.dumps({**conn, "password": "wrong"}))
    with pytest.raises(MeasurementError, match="HTTP 401"):
        logs.measure(http_check(), SourceContext())
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_AUTHORIZER", json.dumps({**conn, "port": 1}))
    with pytest.raises(MeasurementError, match="unreachable"):
        logs.measure(http_check(), SourceContext())


# -- per minute (seed Dashboard 2 "Slow Queries Count < 5 por minuto") --------------------

MINUTE = r"^(\d{4}-\d\d-\d\d \d\d:\d\d)"


def slow_check(**source) -> Check:
    return Check.model_validate({
        "id": "db_slow_queries", "title": "t", "unit": "per_minute", "rule": "test", "expect": {"op": "<", "value": 5},
        "source": {"kind": "logs", "patterns": [r"duration: \d+\.\d+ ms"], "per_minute": MINUTE, **source},
    })


def slow(minute: str, n: int) -> list[str]:
    return [f"2026-12-05 {minute}:{i:02d}.000 UTC [7] app@staging LOG:  duration: 150.{i} ms" for i in range(n)]


def test_per_minute_reads_the_busiest_minute_not_the_count_since_the_previous_reading(tmp_path):
    log = tmp_path / "pg.log"
    # 12 slow queries over three hours: 4 in each of three minutes, never 5 in one.
    append(log, *slow("10:00", 4), "2026-12-05 10:30:00.000 UTC [7] LOG:  checkpoint", *slow("11:00", 4),
           *slow("13:00", 4))
    m = logs.measure(slow_check(file=str(log)), SourceContext())
    assert m.value == 4 and m.evidence["matches"] == 12
    assert (m.evidence["busiest_minute"], m.evidence["minutes_with_matches"]) == ("2026-12-05 13:00", 3)
    append(log, *slow("13:05", 6))
    later = logs.measure(slow_check(file=str(log)), SourceContext(previous=m.evidence))
    assert later.value == 6 and later.evidence["busiest_minute"] == "2026-12-05 13:05"


def test_a_minute_split_between_two_readings_is_counted_whole(tmp_path):
    log = tmp_path / "pg.log"
    append(log, *slow("10:00", 3))
    c = slow_check(file=str(log))
    first = logs.measure(c, SourceContext())
    assert first.value == 3
    nothing = logs.measure(c, SourceContext(previous=first.evidence))  # no new line: the minute may go on
    assert nothing.value == 0 and nothing.evidence["last_minute_matches"] == 3
    append(log, *slow("10:00", 3), *slow("10:01", 1))
    second = logs.measure(c, SourceContext(previous=nothing.evidence))
    assert second.value == 6 and second.evidence["busiest_minute"] == "2026-12-05 10:00"


def test_a_matching_line_without_a_minute_counts_in_the_busiest_minute(tmp_path):
    log = tmp_path / "pg.log"
    append(log, *slow("10:00", 2), "LOG:  duration: 900.1 ms  (no prefix)", "duration: 101.0 ms")
    m = logs.measure(slow_check(file=str(log)), SourceContext())
    assert m.value == 4 and m.evidence["untimed_matches"] == 2


def test_per_minute_needs_one_group_and_the_per_minute_unit():
    with pytest.raises(ValueError, match="exactly one group"):
        slow_check(file="x.log", per_minute=r"^\d{4}")
    with pytest.raises(ValueError, match="unit 'count'"):
        Check.model_validate({"id": "db_slow_queries", "title": "t", "unit": "count", "rule": "r",
                              "expect": {"op": "<", "value": 5},
                              "source": {"kind": "logs", "file": "x", "patterns": ["d"], "per_minute": MINUTE}})
    with pytest.raises(ValueError, match="unit 'per_minute'"):  # a count since the last reading is no rate
        Check.model_validate({"id": "app_log_errors", "title": "t", "unit": "per_minute", "rule": "r",
                              "expect": {"op": "<", "value": 5}, "source": {"kind": "logs", "file": "x",
                                                                            "patterns": ["d"]}})


def test_a_per_minute_reading_matches_each_line_once(tmp_path, monkeypatch):
    """The per-minute branch ran count() over the lines and then per_minute_counts() over
    them again: every pattern searched every line twice (and the lines were copied into a
    list for it). Now one pass gives the count, the samples and the minutes."""
    searched: list[str] = []
    compile_ = logs.re.compile

    class Counting:
        def __init__(self, pattern):
            self.pattern = pattern

        def search(self, line):
            searched.append(line)
            return self.pattern.search(line)

    def counting_compile(pattern, flags=0):
        compiled = compile_(pattern, flags)
        return Counting(compiled) if pattern == r"duration: \d+\.\d+ ms" else compiled

    log = tmp_path / "pg.log"
    append(log, *slow("10:00", 3), "2026-12-05 10:00:30.000 UTC [7] LOG:  checkpoint", *slow("10:01", 2))
    monkeypatch.setattr(logs.re, "compile", counting_compile)
    m = logs.measure(slow_check(file=str(log)), SourceContext())
    assert (m.value, m.evidence["matches"], m.evidence["lines_read"], len(m.evidence["samples"])) == (3, 5, 6, 5)
    assert len(searched) == 6, len(searched)  # each of the 6 lines once
