"""tasks.failing: the package's errors become failed tasks with the same message; others pass through."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from migration_soak.airflow.tasks import failing
from migration_soak.exceptions import BackupError, MeasurementError, MigrationError


def test_a_listed_error_fails_the_task_with_its_message_prefix_and_suffix():
    with pytest.raises(AirflowFailException) as err:
        with failing(MigrationError, BackupError, prefix="rollback rehearsal failed at ",
                     suffix="; staging was not touched"):
            raise BackupError("restore: pg_restore exited 1")
    assert str(err.value) == "rollback rehearsal failed at restore: pg_restore exited 1; staging was not touched"
    assert isinstance(err.value.__cause__, BackupError)


def test_an_error_not_listed_propagates_unchanged():
    # The failure callback names the exception class: an unexpected error keeps its own.
    with pytest.raises(MeasurementError, match="^users: timeout$"):
        with failing(MigrationError):
            raise MeasurementError("users: timeout")


def test_nothing_raised_nothing_changed():
    with failing(MigrationError):
        value = 1
    assert value == 1
