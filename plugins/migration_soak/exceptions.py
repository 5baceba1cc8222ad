"""The package's own error types: one base, one class per stage of a soak."""


class SoakError(Exception):
    """Base class of every error migration-soak raises on purpose."""


class PlanError(SoakError):
    """A plan file is missing, unreadable or invalid; the message names file, field and value."""


class BackupError(SoakError):
    """A backup could not be taken or does not read back whole; the migration must not start."""


class MigrationError(SoakError):
    """Deploying or verifying the migration failed, or the ledger is in a state that forbids it."""


class RollbackError(SoakError):
    """The rollback could not restore the schema, the data or the ledger."""


class MeasurementError(SoakError):
    """A check could not be measured; it is recorded as an ``error`` observation, never a pass."""


class LintError(SoakError):
    """The migration lint (``lint.py``) failed: squawk is missing, crashed or timed out, a
    migration's SQL cannot be read, or squawk found problems the plan does not accept.

    ``result``: the :class:`~migration_soak.lint.LintResult` when squawk ran (record it
    before failing); ``None`` when it could not run.
    """

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class RehearsalError(SoakError):
    """The rollback rehearsal (``rehearsal.py``) failed on its scratch copy; staging was
    not touched. ``step``: ``scratch``, ``restore``, ``migrate``, ``validate``,
    ``rollback`` or ``verify``."""

    def __init__(self, step: str, message: str):
        super().__init__(f"{step}: {message}")
        self.step = step


class SoakStopped(SoakError):
    """A NO-GO already stopped the soak: the step does not run (its task is skipped)."""
