"""``logs`` source: count log lines matching the runbook's patterns (seed "Logs a Revisar").

Three readers (see ``LogsSource``): ``file`` (follows rotation), ``command``, ``http``.
A line counts when a pattern matches and no ``exclude`` does.

Design notes: docs/design.md#sourceslogspy
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from migration_soak.exceptions import MeasurementError
from migration_soak.plan import REPO_ROOT, Check, HttpLogs, LogsSource
from migration_soak.sources import Measurement, SourceContext, _http, spec_of

FIRST_LINES = 500
TIMEOUT_S = 30
SAMPLES = 10
SAMPLE_CHARS = 300
#: Most bytes read from a file per observation; beyond it the oldest new bytes are skipped
#: (and counted in the evidence), so a log flood cannot stall the check.
MAX_READ_BYTES = 256 * 1024 * 1024
_BLOCK = 64 * 1024
#: Bytes at the start of the file whose hash tells the same file from a new one.
HEAD_BYTES = 128

#: The password of a URL's user info, with or without a user name (``redis://:pw@host``),
#: up to the token's last ``@``: a password may hold ``/`` or ``@`` unencoded (a text with
#: another ``@`` later in the same token loses a little more than the password).
URL_CREDENTIALS = re.compile(r"(://[^\s/:@]*:)\S+@")

_MASKS = (
    # Authorization: Bearer <token> / Basic <credentials>
    (re.compile(r"\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE), r"\1\2***"),
    # password=..., "api_key": "...", access_token: ..., passwordHash=$2b$...
    (re.compile(
        r"""([\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|authorization)[\w-]*"""
        r"""["']?\s*[:=]\s*["']?)(?!(?:bearer|basic)\s)(?!\*\*\*)[^\s"'&,;]+""",
        re.IGNORECASE,
    ), r"\1***"),
    # scheme://user:password@host, and scheme://:password@host (no user: Redis' usual form)
    (URL_CREDENTIALS, r"\1***@"),
)


def mask(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``***``."""
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    return text


def _sample(line: str) -> str:
    return mask(line.rstrip("\r\n"))[:SAMPLE_CHARS]


def count(lines: Iterable[str], patterns: list[str], exclude: list[str]) -> tuple[int, int, list[str]]:
    """(lines read, lines matching, up to ``SAMPLES`` masked matching lines)."""
    wanted = [re.compile(p, re.IGNORECASE) for p in patterns]
    unwanted = [re.compile(p, re.IGNORECASE) for p in exclude]
    read = matched = 0
    samples: list[str] = []
    for line in lines:
        read += 1
        if any(p.search(line) for p in wanted) and not any(p.search(line) for p in unwanted):
            matched += 1
            if len(samples) < SAMPLES:
                samples.append(_sample(line))
    return read, matched, samples


# -- file --------------------------------------------------------------------------------


def _resolve(name: str) -> Path:
    """A log path: ``$VARS`` expanded (a deployment names its log files in the environment,
    e.g. ``$SOAK_APP_LOG``), relative paths from the repository root."""
    expanded = os.path.expandvars(name)
    if "$" in expanded:
        raise MeasurementError(f"log file {name!r}: environment variable not set")
    path = Path(expanded)
    return path if path.is_absolute() else REPO_ROOT / path


def _lines(data: bytes) -> Iterator[str]:
    for raw in data.splitlines():
        yield raw.decode("utf-8", errors="replace")


def _complete(data: bytes) -> bytes:
    """``data`` up to and including its last newline (a line being written waits)."""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


def _tail_start(f, size: int, lines: int) -> int:
    """Offset where the last ``lines`` complete lines of the open file ``f`` begin."""
    pos, newlines = size, 0
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        # The newline ending the last line does not start a line; skip it once.
        if pos + step == size and block.endswith(b"\n"):
            block = block[:-1]
        for i in range(len(block) - 1, -1, -1):
            if block[i] == 0x0A:
                newlines += 1
                if newlines == lines:
                    return pos + i + 1
    return 0


def _read_range(f, start: int, end: int) -> tuple[bytes, int]:
    """Bytes [start, end) of the open file ``f`` (at most ``MAX_READ_BYTES``: the newest);
    returns (bytes, bytes skipped)."""
    skipped = max(0, end - start - MAX_READ_BYTES)
    f.seek(start + skipped)
    return f.read(end - start - skipped), skipped


def _head(f, offset: int) -> str:
    """Hash of the first ``min(offset, HEAD_BYTES)`` bytes of the open file ``f``."""
    f.seek(0)
    return hashlib.sha256(f.read(min(offset, HEAD_BYTES))).hexdigest()[:16]


def _rotated_away(path: Path, inode: int) -> Path | None:
    """The file beside ``path`` that has ``inode`` (the log renamed by its rotation)."""
    try:
        siblings = list(path.parent.glob(path.name + "*"))
    except OSError:
        return None
    for sibling in siblings:
        try:
            if sibling != path and sibling.stat().st_ino == inode:
                return sibling
        except OSError:
            continue
    return None


def read_file(name: str, previous: dict[str, Any] | None) -> tuple[list[str], dict[str, Any]]:
    """New complete lines of the log ``name`` since ``previous`` (``{"offset", "inode", "head"}``).

    Returns (lines, evidence with the new ``offset``, ``inode`` and ``head``). See the
    module doc. The file is opened once and measured through that handle, so a rotation
    while reading cannot mix two files.
    """
    path = _resolve(name)
    evidence: dict[str, Any] = {"file": str(path)}
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise MeasurementError(f"log file {path} is not a regular file")
            start, rest, skipped = _resume_point(f, path, st, previous or {}, evidence)
            data, skip = _read_range(f, start, st.st_size)
            data = _complete(data)
            offset = start + skip + len(data)
            head = _head(f, offset)
    except FileNotFoundError:
        raise MeasurementError(f"log file {path} does not exist") from None
    except IsADirectoryError:
        raise MeasurementError(f"log file {path} is not a regular file") from None
    except OSError as exc:
        raise MeasurementError(f"log file {path}: {type(exc).__name__}: {exc.strerror}") from None
    skipped += skip
    evidence.update(offset=offset, inode=st.st_ino, head=head)
    if skipped:
        evidence["skipped_bytes"] = skipped
    return [line for chunk in (rest, data) for line in _lines(chunk)], evidence


def _resume_point(f, path: Path, st: os.stat_result, prev: dict[str, Any],
                  evidence: dict[str, Any]) -> tuple[int, bytes, int]:
    """Where to read the open log ``f`` (``st``: its ``fstat``) from after ``prev``:
    (offset, the unread rest of the file it was rotated away to, bytes skipped of that rest).

    Without a previous offset and inode: the last ``FIRST_LINES`` lines (evidence
    ``first_read``). A rotated file (see :func:`_was_rotated`): from 0 (evidence
    ``rotated``), after the rest of the renamed file, if found beside it (``rotated_to``).
    Else the previous offset.
    """
    prev_offset, prev_inode = prev.get("offset"), prev.get("inode")
    if not isinstance(prev_offset, int) or not isinstance(prev_inode, int):
        evidence["first_read"] = f"last {FIRST_LINES} lines"
        return _tail_start(f, st.st_size, FIRST_LINES), b"", 0
    if not _was_rotated(f, st, prev_offset, prev_inode, prev.get("head")):
        return prev_offset, b"", 0
    evidence["rotated"] = True
    old = _rotated_away(path, prev_inode) if prev_inode != st.st_ino else None
    if old is None:
        return 0, b"", 0
    rest = _rest_of(old, prev_offset)
    if rest is None:
        return 0, b"", 0
    evidence["rotated_to"] = old.name
    return 0, *rest


def _was_rotated(f, st: os.stat_result, prev_offset: int, prev_inode: int, prev_head: Any) -> bool:
    """Whether the open log ``f`` is not the file read up to ``prev_offset`` before: another
    inode, shorter than that offset, or other first bytes than ``prev_head`` (when a str)."""
    return (prev_inode != st.st_ino or st.st_size < prev_offset
            or (isinstance(prev_head, str) and _head(f, prev_offset) != prev_head))


def _rest_of(old: Path, offset: int) -> tuple[bytes, int] | None:
    """(bytes of the rotated-away file ``old`` from ``offset`` on, ending with a newline
    unless empty; bytes skipped beyond ``MAX_READ_BYTES``), or None when ``old`` is shorter
    than ``offset`` (not the file that was read). Raises ``OSError``."""
    with open(old, "rb") as g:
        size = os.fstat(g.fileno()).st_size
        if size < offset:
            return None
        data, skipped = _read_range(g, offset, size)
    return (data if not data or data.endswith(b"\n") else data + b"\n"), skipped


# -- command -----------------------------------------------------------------------------


def read_command(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """stdout lines of ``argv`` run without a shell in the repository root."""
    shown = mask(" ".join(argv))[:SAMPLE_CHARS]
    try:
        done = subprocess.run(
            argv, cwd=REPO_ROOT, capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, check=False
        )
    except FileNotFoundError:
        raise MeasurementError(f"log command not found: {argv[0]!r}") from None
    except PermissionError:
        raise MeasurementError(f"log command not executable: {argv[0]!r}") from None
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"log command timed out after {TIMEOUT_S} s: {shown}") from None
    if done.returncode != 0:
        tail = mask(done.stderr.decode("utf-8", errors="replace").strip()[-500:])
        raise MeasurementError(f"log command exited {done.returncode}: {shown}: {tail or '(no stderr)'}")
    return list(_lines(done.stdout)), {"command": shown, "exit": 0}


# -- http --------------------------------------------------------------------------------


def _walk(node: Any, dotted: str) -> Any:
    """``node`` followed along ``a.b.0.c`` (dict keys, list indexes); KeyError if absent."""
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(part)
    return node


def _field_equals(entry: Any, name: str, expected: str) -> bool:
    try:
        value = _walk(entry, name)
    except KeyError:
        return False
    return (str(value).lower() if isinstance(value, bool) else str(value)) == expected


def _entry_text(entry: Any, text_field: str) -> str:
    if isinstance(entry, str):
        return entry
    try:
        value = _walk(entry, text_field)
    except KeyError:
        return json.dumps(entry, sort_keys=True, default=str)
    return value if isinstance(value, str) else json.dumps(value, default=str)


def read_http(src: HttpLogs) -> tuple[list[str], dict[str, Any]]:
    """Texts of the entries the log API returns that match ``where`` (one per entry;
    a multi-line message is one entry)."""
    resp = _http.get(_http.hook(src.connection, bearer=True), src.endpoint, timeout_s=TIMEOUT_S,
                     failed=f"log API {src.endpoint} unreachable")
    if resp.status_code != 200:
        raise MeasurementError(f"log API {src.endpoint} answered HTTP {resp.status_code}: {mask(resp.text[:200])}")
    try:
        body = resp.json()
    except ValueError:
        raise MeasurementError(f"log API {src.endpoint} did not answer JSON: {mask(resp.text[:200])!r}") from None
    try:
        entries = _walk(body, src.items)
    except KeyError as exc:
        raise MeasurementError(f"log API {src.endpoint}: no {src.items!r} in the answer (missing {exc})") from None
    if not isinstance(entries, list):
        raise MeasurementError(f"log API {src.endpoint}: {src.items!r} is a {type(entries).__name__}, not a list")
    kept = [e for e in entries if all(_field_equals(e, k, v) for k, v in src.where.items())]
    lines = [_entry_text(e, src.text_field) for e in kept]
    return lines, {"endpoint": src.endpoint, "entries": len(entries), "where": dict(src.where), "kept": len(kept)}


def mark(check: Check) -> dict[str, Any] | None:
    """Where the check's log file ends now (``{"file", "offset", "inode", "head"}``, as a
    reading's evidence), for the first reading after the migration to start at; None for
    a ``command`` or ``http`` reader (they have no position). Taken just before the
    migration (``runbook.mark_logs``): without it that reading took the last 500 lines,
    whatever their time, mixing lines from before the DDL with some after it, or missing
    the first ones after it on a busy log. Raises ``MeasurementError`` as a reading does."""
    src = spec_of(check, LogsSource)
    if not src.file:
        return None
    _, evidence = read_file(src.file, None)
    evidence.pop("first_read", None)
    return evidence


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """Count the matching lines the check's reader gives (see the module doc); the
    ``file`` reader starts where ``ctx.previous`` left off.

    Evidence: ``reader``, the reader's own figures (``offset``/``inode``/``head``,
    ``command``, ``endpoint``...), ``lines_read``, ``matches``, ``samples`` (masked);
    with ``per_minute`` (the value: the busiest minute, :func:`per_minute_counts`) also ``busiest_minute``,
    ``busiest_minute_matches``, ``minutes_with_matches``, ``untimed_matches``.
    Raises ``MeasurementError`` when the reader cannot read its log.
    """
    src = spec_of(check, LogsSource)
    if src.file:
        reader = "file"
        lines, evidence = read_file(src.file, ctx.previous)
    elif src.command:
        reader = "command"
        lines, evidence = read_command(src.command)
    elif src.http is not None:
        reader = "http"
        lines, evidence = read_http(src.http)
    else:  # LogsSource's validator requires exactly one reader
        raise MeasurementError(f"{check.id}: no log reader (file, command or http)")
    if src.per_minute is None:
        read, matched, samples = count(lines, src.patterns, src.exclude)
        return Measurement(float(matched), {"reader": reader, **evidence, "lines_read": read, "matches": matched,
                                            "samples": samples})
    # The file reader resumes where the previous reading stopped: a minute split between
    # the two readings is counted whole (its earlier matches carried over).
    prev = ctx.previous or {}
    carry = (prev.get("last_minute"), int(prev.get("last_minute_matches") or 0)) if reader == "file" else None
    t = _tally(lines, src.patterns, src.exclude, src.per_minute, carry)  # one pass: count, samples and minutes
    read, matched, samples, per, last, untimed = t.read, t.matched, t.samples, t.per, t.last, t.untimed
    if last is None and carry and carry[0]:  # no stamped line: the carried minute may go on
        last, per_last = carry
    else:
        per_last = per.get(last, 0) if last else 0
    top = max(per, key=lambda k: (per[k], k)) if per else None
    busiest = per[top] if top else 0
    return Measurement(float(busiest + untimed), {
        "reader": reader, **evidence, "lines_read": read, "matches": matched, "samples": samples,
        "busiest_minute": top, "busiest_minute_matches": busiest, "minutes_with_matches": len(per),
        "untimed_matches": untimed, "last_minute": last, "last_minute_matches": per_last})


def per_minute_counts(lines: Iterable[str], patterns: list[str], exclude: list[str], minute: str,
                      carry: tuple[str | None, int] | None = None) -> tuple[dict[str, int], str | None, int]:
    """``({minute: matching lines}, the last line's minute, matching lines without one)``.

    ``minute``: a regex whose group 1 captures a line's minute (``LogsSource.per_minute``);
    ``carry``: ``(minute, matches)`` already counted in that minute by the previous
    reading, added when this reading's lines start in the same minute. The reading is the
    busiest minute plus the lines without one (counted there: the value never understates
    a minute)."""
    t = _tally(lines, patterns, exclude, minute, carry)
    return t.per, t.last, t.untimed


@dataclass
class _Tally:
    """What one pass over a reading's lines found (:func:`_tally`)."""

    read: int = 0
    matched: int = 0
    samples: list[str] = field(default_factory=list)
    per: dict[str, int] = field(default_factory=dict)
    last: str | None = None
    untimed: int = 0


def _tally(lines: Iterable[str], patterns: list[str], exclude: list[str], minute: str,
           carry: tuple[str | None, int] | None) -> _Tally:
    """:func:`count` and :func:`per_minute_counts` in one pass over ``lines``: each line is
    searched for the patterns once (the per-minute reading ran both, every line twice)."""
    stamp = re.compile(minute)
    wanted = [re.compile(p, re.IGNORECASE) for p in patterns]
    unwanted = [re.compile(p, re.IGNORECASE) for p in exclude]
    t = _Tally()
    first = True
    for line in lines:
        t.read += 1
        m = stamp.search(line)
        now: str | None = m.group(1) if m is not None and m.group(1) else None
        if now is not None:
            if first and carry and carry[0] == now and carry[1] > 0:
                t.per[now] = carry[1]
            t.last, first = now, False
        if any(p.search(line) for p in wanted) and not any(p.search(line) for p in unwanted):
            t.matched += 1
            if len(t.samples) < SAMPLES:
                t.samples.append(_sample(line))
            if now is None:
                t.untimed += 1
            else:
                t.per[now] = t.per.get(now, 0) + 1
    return t
