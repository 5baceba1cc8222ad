"""Preflight's pooler detection (pooler.py) against a real PgBouncer and a real server."""

import pytest

from migration_soak.exceptions import MigrationError
from migration_soak.pooler import detect, require_direct


def test_a_direct_connection_is_not_a_pooler(target):
    assert detect(target) is None
    require_direct(target, "connections.staging")  # does not raise


def test_pgbouncer_in_transaction_mode_is_detected(pgbouncer, target):
    pooled = pgbouncer.target(target.database)
    found = detect(pooled)
    assert found is not None and "transaction-mode pooler" in found
    with pytest.raises(MigrationError) as err:
        require_direct(pooled, "connections.staging")
    message = str(err.value)
    assert "connections.staging (" in message and "Set connections.staging_direct" in message
    assert pooled.password not in message


def test_an_unreachable_direct_connection_names_the_field(target):
    from dataclasses import replace

    from demo.postgres import free_port

    closed_port = free_port()
    with pytest.raises(MigrationError, match=r"connections.staging_direct: cannot connect to .*:%d/" % closed_port):
        require_direct(replace(target, port=closed_port), "connections.staging_direct")
