"""Which plan SQL files may run as check queries: parsed by PostgreSQL's own grammar.

Refuses what a rollback does not undo or what ends the soak's read-only transaction:
transaction control, the soak's own settings, session-wide settings, session advisory
locks, prepared statements, ``DISCARD``/``LOAD``, ``DO``/``CALL``, unparsable files
(STYLE.md, "PgBouncer in transaction mode"). Parser: ``pglast`` (PostgreSQL 18 grammar).

Design notes: docs/design.md#sourcessql_guardpy
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Sequence

#: Settings the soak's check transaction relies on (``SET``/``RESET``/``set_config`` of
#: them is refused in any scope), by their canonical lower-case names (``SET ROLE`` and
#: ``SET SESSION AUTHORIZATION`` parse as ``role``/``session_authorization``).
GUARDED = frozenset({
    "statement_timeout",
    "default_transaction_read_only",
    "transaction_read_only",
    "default_transaction_isolation",
    "transaction_isolation",
    "default_transaction_deferrable",
    "transaction_deferrable",
    "application_name",
    "role",
    "session_authorization",
})

#: Session-level advisory lock functions: a rollback does not release what they take.
SESSION_LOCK_FUNCTIONS = frozenset({
    "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
})

#: Functions that leave state in the server session past the transaction's ROLLBACK (found
#: by review3 on PostgreSQL 18: ``pg_backup_start('x', true)`` runs in a READ ONLY
#: transaction, forces a checkpoint, and after the rollback the same session refuses a
#: second one, "a backup is already in progress in this session"): the pooler hands that
#: server connection, backup in progress, to the next client. Refused like a session lock.
SESSION_STATE_FUNCTIONS = frozenset({
    "pg_backup_start", "pg_start_backup", "pg_backup_stop", "pg_stop_backup",
    "pg_replication_origin_session_setup", "pg_replication_origin_session_reset",
})

#: Functions that run SQL given to them as text, out of the parser's sight (what they run
#: could call set_config or take a session lock); ``ts_rewrite`` only in its two-argument
#: form (a query text); every ``dblink*`` function of the extension, in whatever schema
#: (``_call_refusal``: its own connection is outside the transaction). A list, so only the known ones,
#: refused early (at plan load): what keeps the ``statement_timeout`` on is
#: ``sources.sql.run_readonly``, which runs the file a statement at a time and fails the
#: reading when one changed the soak's settings.
QUERY_TEXT_FUNCTIONS = frozenset({
    "ts_stat", "ts_rewrite", "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "cursor_to_xmlschema", "dblink", "dblink_exec", "dblink_open", "dblink_send_query",
})

_TRANSACTION_WORDS = {
    "TRANS_STMT_BEGIN": "BEGIN",
    "TRANS_STMT_START": "START TRANSACTION",
    "TRANS_STMT_COMMIT": "COMMIT/END",
    "TRANS_STMT_ROLLBACK": "ROLLBACK/ABORT",
    "TRANS_STMT_SAVEPOINT": "SAVEPOINT",
    "TRANS_STMT_RELEASE": "RELEASE SAVEPOINT",
    "TRANS_STMT_ROLLBACK_TO": "ROLLBACK TO SAVEPOINT",
    "TRANS_STMT_PREPARE": "PREPARE TRANSACTION",
    "TRANS_STMT_COMMIT_PREPARED": "COMMIT PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED",
}
_SAVEPOINT_KINDS = frozenset({"TRANS_STMT_SAVEPOINT", "TRANS_STMT_RELEASE", "TRANS_STMT_ROLLBACK_TO"})
_TRUE_WORDS = frozenset({"true", "t", "on", "yes", "y", "1"})


class UnsafeSql(ValueError):
    """A plan SQL text that must not run as a check query. ``str()`` names the statement
    (number, line, text) and why; ``statement`` is its number (1-based, 0: the whole text)."""

    def __init__(self, message: str, statement: int = 0) -> None:
        super().__init__(message)
        self.statement = statement


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a file: ``number`` (1-based), ``line`` (1-based, where
    its first token is) and ``text`` (as written, comments before it left out)."""

    number: int
    line: int
    text: str
    node: Any

    def describe(self, total: int) -> str:
        short = " ".join(self.text.split())
        short = short if len(short) <= 80 else short[:77] + "..."
        return f"statement {self.number} of {total} (line {self.line}: {short})"


def statements(sql: str) -> list[Statement]:
    """The top-level statements of ``sql``, parsed by PostgreSQL's grammar (pglast).

    Raises ``UnsafeSql`` when the text does not parse (with the parser's message and line).
    """
    from pglast import parse_sql
    from pglast.parser import ParseError

    try:
        raws = parse_sql(sql)
    except ParseError as exc:
        message, index = (exc.args + (None,))[:2] if exc.args else (str(exc), None)
        where = f" (line {_line_of(sql, index)})" if isinstance(index, int) else ""
        raise UnsafeSql(f"PostgreSQL's parser (pglast) rejects it: {message}{where}") from None
    out = []
    for number, raw in enumerate(raws, start=1):
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        begin = _skip_comments(sql, start, end)
        out.append(Statement(number, _line_of(sql, begin), sql[begin:end].strip(), raw.stmt))
    return out


@lru_cache(maxsize=256)
def _parsed(sql: str) -> tuple[Statement, ...]:
    """:func:`statements`, cached by text (a ``UnsafeSql`` is not cached)."""
    return tuple(statements(sql))


def texts(sql: str) -> tuple[str, ...]:
    """The text of each top-level statement of ``sql`` (as :func:`statements`; cached by
    text): what ``sources.sql.run_readonly`` sends, one statement at a time."""
    return tuple(stmt.text for stmt in _parsed(sql))


@lru_cache(maxsize=256)
def check(sql: str) -> int:
    """Refuse (``UnsafeSql``) a check query that would end the soak's transaction, turn its
    guard off or leave something on the server connection (see the module doc); returns
    the number of statements. The first offending statement is named.

    Cached by text (a safe file is parsed once per process, not at each of the guard's
    2 880 readings a soak: the parse was a quarter of a guard reading's time); a refusal
    is not cached and is raised again at each call."""
    return _refuse_first(sql, refusal)


def _refuse_first(sql: str, rule: Any) -> int:
    """Parse ``sql`` and raise ``UnsafeSql`` naming its first statement ``rule`` (a
    statement node -> reason or ``None``) refuses; else the number of statements."""
    found = _parsed(sql)
    for stmt in found:
        reason = rule(stmt.node)
        if reason:
            raise UnsafeSql(f"{stmt.describe(len(found))}: {reason}", stmt.number)
    return len(found)


#: Built-in functions that write or act on the server beyond the query's own reads: a
#: read-only transaction refuses some (``nextval``: every reading an ``error``), lets the
#: others through (``pg_terminate_backend`` would close the application's connections).
#: Refused at plan load (:func:`check_reads`); ``pg_stat_reset*`` by prefix. A function of
#: the application's own that writes is out of the parser's sight: the server's
#: read-only transaction still refuses its writes (the reading is an ``error``).
WRITING_FUNCTIONS = frozenset({
    "nextval", "setval", "txid_current", "pg_current_xact_id", "pg_notify",
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_switch_wal",
    "pg_create_restore_point", "pg_promote", "pg_log_backend_memory_contexts", "pg_logical_emit_message",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot", "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot", "pg_replication_slot_advance",
    "pg_replication_origin_create", "pg_replication_origin_drop", "pg_import_system_collations",
    "lo_import", "lo_export", "lo_unlink", "lo_create", "lo_creat", "lo_from_bytea", "lo_put", "lo_open",
    "lo_truncate", "lowrite", "pg_file_write", "pg_file_rename", "pg_file_unlink",
})

#: Functions of extensions that act on the server, refused like :data:`WRITING_FUNCTIONS`
#: in whatever schema the extension was created in (``public.pg_stat_statements_reset()``
#: wipes the server's query statistics; a read-only transaction lets it through).
EXTENSION_WRITING_FUNCTIONS = frozenset({"pg_stat_statements_reset"})

#: Top-level statements a check query may be made of: reads, and what ``check`` allows
#: besides (``SET LOCAL``, ``set_config(..., true)`` inside a ``SELECT``).
READ_STATEMENTS = frozenset({"SelectStmt", "ExplainStmt", "VariableShowStmt", "VariableSetStmt"})

_LOCKING_WORDS = {"LCS_FORUPDATE": "FOR UPDATE", "LCS_FORNOKEYUPDATE": "FOR NO KEY UPDATE",
                  "LCS_FORSHARE": "FOR SHARE", "LCS_FORKEYSHARE": "FOR KEY SHARE"}
_WRITE_WORDS = {"InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE", "MergeStmt": "MERGE"}


def check_reads(sql: str) -> int:
    """Refuse (``UnsafeSql``) a check query that writes, what the plan's loader asks on top
    of :func:`check`: any statement but a read (``SELECT``/``VALUES``/``TABLE``,
    ``EXPLAIN``, ``SHOW``, ``SET LOCAL``), so no DDL, ``COPY``, ``LOCK``, ``VACUUM``...; an
    ``INSERT``/``UPDATE``/``DELETE``/``MERGE`` anywhere (a data-modifying ``WITH``, under
    ``EXPLAIN ANALYZE``, which runs it); ``SELECT ... INTO``; ``FOR UPDATE``/``FOR SHARE``
    (row locks the application's writers would wait on); a call of
    :data:`WRITING_FUNCTIONS`. A plain ``EXPLAIN`` (no ``ANALYZE``) runs nothing and is a
    read whatever it explains. Each would have loaded and made every reading an ``error``
    (the server's read-only transaction refuses the write: never a pass), or acted on the
    server (``FOR UPDATE`` and ``pg_terminate_backend`` pass a read-only transaction).
    Returns the number of statements; the first offending one is named."""
    return _refuse_first(sql, write_refusal)


def write_refusal(node: Any) -> str | None:
    """Why one parsed top-level statement is not a read (:func:`check_reads`), or ``None``."""
    kind = type(node).__name__
    if kind not in READ_STATEMENTS:
        if kind in _WRITE_WORDS:
            return (f"it writes ({_WRITE_WORDS[kind]}): a check query may only read (SELECT, EXPLAIN, SHOW, SET "
                    "LOCAL); the soak's read-only transaction would refuse it and every reading would be an error")
        word = re.sub(r"(?<!^)(?=[A-Z])", " ", kind.removesuffix("Stmt")).upper()
        return f"it is no read ({word} statement): a check query may only read (SELECT, EXPLAIN, SHOW, SET LOCAL)"
    if kind == "ExplainStmt":
        if not explain_analyzes(node):
            return None  # EXPLAIN without ANALYZE plans the query and runs nothing
        inner = write_refusal(node.query)
        return f"EXPLAIN ANALYZE runs what it explains: {inner}" if inner else None
    for item in _nodes(node):
        tag = item.get("@")
        if tag in _WRITE_WORDS:
            return (f"it writes ({_WRITE_WORDS[tag]} in a WITH query or subquery): a check query may only read; "
                    "the soak's read-only transaction would refuse it and every reading would be an error")
        if tag == "LockingClause":
            strength = _LOCKING_WORDS.get(str((item.get("strength") or {}).get("name")), "FOR UPDATE")
            return (f"SELECT ... {strength} locks the rows it reads: the application's writes to them would wait on the check; "
                    "a check query reads without locking rows")
        if tag == "IntoClause":
            return "SELECT ... INTO creates a table: a check query may only read"
        if tag == "FuncCall":
            name = _function_name(item)
            extension = _function_name(item, any_schema=True)  # an extension's: in whatever schema
            if extension in EXTENSION_WRITING_FUNCTIONS:
                name = extension
            if name in WRITING_FUNCTIONS or name in EXTENSION_WRITING_FUNCTIONS or name.startswith("pg_stat_reset"):
                return (f"{name}() writes or acts on the server, not only reads: a check query may only read "
                        "(the read-only transaction refuses some of these, every reading would be an error; "
                        "others it lets through)")
    return None


def explain_analyzes(node: Any) -> bool:
    """Whether an ``ExplainStmt`` has ``ANALYZE`` on (``EXPLAIN ANALYZE``, ``(ANALYZE)``,
    ``(ANALYZE true|on|1|yes)``): it then runs the query it explains."""
    for option in node.options or ():
        if option.defname.lower() == "analyze":
            arg = option.arg
            if arg is None:
                return True
            value = str(getattr(arg, "sval", getattr(arg, "boolval", getattr(arg, "ival", arg)))).lower()
            return value in _TRUE_WORDS
    return False


def refusal(node: Any) -> str | None:
    """Why one parsed top-level statement may not run inside the soak's transaction, or ``None``."""
    kind = type(node).__name__
    if kind == "TransactionStmt":
        word = _TRANSACTION_WORDS.get(node.kind.name, node.kind.name)
        if node.kind.name in _SAVEPOINT_KINDS:
            return (f"transaction control ({word}) is not allowed in a check query: savepoints split the soak's "
                    "read-only transaction (the soak runs the file under a savepoint of its own)")
        return (f"transaction control ({word}) is not allowed in a check query: it would have ended the soak's "
                "read-only transaction (and its statement_timeout), so what follows would run writable and be "
                "committed onto a connection the application shares through the pooler")
    if kind == "VariableSetStmt":
        return _set_refusal(node)
    if kind in ("PrepareStmt", "ExecuteStmt", "DeallocateStmt"):
        return ("prepared statements (PREPARE/EXECUTE/DEALLOCATE) outlive the transaction on the server "
                "connection, which a pooler hands to the next client")
    if kind in ("DiscardStmt", "LoadStmt"):
        return f"{'DISCARD' if kind == 'DiscardStmt' else 'LOAD'} changes the server session, not just this transaction"
    if kind in ("DoStmt", "CallStmt"):
        return (f"{'a DO block' if kind == 'DoStmt' else 'CALL'} runs procedural code the soak cannot inspect "
                "(it may change session settings or take advisory locks); write the check as plain SQL")
    for call in _function_calls(node):
        reason = _call_refusal(call)
        if reason:
            return reason
    return None


def _set_refusal(node: Any) -> str | None:
    kind = node.kind.name
    name = (node.name or "").lower()
    if kind == "VAR_SET_MULTI":  # SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ...
        return (f"SET {node.name} changes the transaction's characteristics; check queries run in the soak's "
                "read-only transaction")
    if kind == "VAR_RESET_ALL":
        return "RESET ALL would reset the soak's own settings (statement_timeout, application_name)"
    if name in GUARDED:
        verb = "RESET" if kind == "VAR_RESET" else ("SET LOCAL" if node.is_local else "SET")
        return f"{verb} {name}: {_guarded_why(name)}"
    if kind == "VAR_RESET":
        return f"RESET {name} changes the session's setting: use SET LOCAL {name} = ... instead"
    if not node.is_local:
        return (f"SET {name} is session-wide: it would outlive the transaction on a pooled connection if "
                f"committed; use SET LOCAL {name} = ... (transaction-local)")
    return None


def _call_refusal(call: dict) -> str | None:
    name = _function_name(call)
    extension = _function_name(call, any_schema=True)
    if extension.startswith("dblink"):
        return (f"{extension}() runs SQL on a connection of its own, out of the soak's read-only transaction (a "
                "write commits there) and, once connected, kept open by the server session after it, which the "
                "pooler hands to the next client; write the query itself in the file")
    if name in QUERY_TEXT_FUNCTIONS and not (name == "ts_rewrite" and len(call.get("args") or ()) != 2):
        return (f"{name}() runs SQL given as text, which the soak cannot inspect (it could switch off the "
                "statement_timeout); write the query itself in the file")
    if name in SESSION_STATE_FUNCTIONS:
        return (f"{name}() changes the server session past this transaction (a rollback does not undo it): the "
                "pooled server connection would keep it for the next client; a check query only reads")
    if name in SESSION_LOCK_FUNCTIONS:
        return (f"{name}() takes a session-level advisory lock, which a rollback does not release: the pooled "
                f"server connection would keep it; use {name.replace('advisory_', 'advisory_xact_', 1)}()")
    if name == "set_config":
        args: Sequence[Any] = call.get("args") or ()  # pglast gives a tuple
        setting = _constant(args[0]) if args else None
        if not isinstance(setting, str):
            return "set_config() with a computed setting name: the soak cannot tell what it changes"
        if setting.lower() in GUARDED:
            return f"set_config('{setting}', ...): {_guarded_why(setting.lower())}"
        local = _constant(args[2]) if len(args) > 2 else None
        if not (local is True or (isinstance(local, str) and local.lower() in _TRUE_WORDS)):
            return (f"set_config('{setting}', ..., false) is session-wide: pass true as its third argument "
                    "(transaction-local)")
    return None


def _guarded_why(name: str) -> str:
    if name in ("role", "session_authorization"):
        return "a check query runs as the connection's role and must not change it"
    return f"the soak's read-only transaction relies on {name}; a check query must not change it"


def _function_calls(node: Any) -> Iterator[dict]:
    """Every ``FuncCall`` anywhere under ``node`` (as pglast's plain-dict form)."""
    return (item for item in _nodes(node) if item.get("@") == "FuncCall")


def _nodes(node: Any) -> Iterator[dict]:
    """Every node under ``node`` and itself, as pglast's plain-dict form."""
    stack = [node(skip_none=True)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "@" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def _function_name(call: dict, *, any_schema: bool = False) -> str:
    """The called function's name, lower case; ``""`` for one qualified by a schema other
    than ``pg_catalog`` (not the built-in), unless ``any_schema`` (an extension's function,
    ``dblink``, lives in whatever schema the extension was created in)."""
    parts = [p.get("sval", "") for p in call.get("funcname") or () if isinstance(p, dict)]
    if len(parts) == 2 and parts[0].lower() != "pg_catalog" and not any_schema:
        return ""  # a function of another schema: not the built-in
    return parts[-1].lower() if parts else ""


def _constant(arg: Any) -> Any:
    """The value of a literal argument (``'x'``, ``true``, ``'true'::boolean``), else ``None``."""
    while isinstance(arg, dict) and arg.get("@") == "TypeCast":
        arg = arg.get("arg")
    if not isinstance(arg, dict) or arg.get("@") != "A_Const":
        return None
    val = arg.get("val") or {}
    if val.get("@") == "String":
        return val.get("sval")
    if val.get("@") == "Boolean":
        return bool(val.get("boolval"))
    if val.get("@") == "Integer":
        return str(val.get("ival", 0))
    return None


def _line_of(sql: str, index: int) -> int:
    return sql.count("\n", 0, max(0, min(index, len(sql)))) + 1


def _skip_comments(sql: str, start: int, end: int) -> int:
    """Index of the first token at or after ``start``: past whitespace, ``--`` and ``/* */``
    comments (which libpg_query counts into the first statement)."""
    i = start
    while i < end:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            nl = sql.find("\n", i)
            i = end if nl < 0 else nl + 1
        elif sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < end and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    return min(i, end)
