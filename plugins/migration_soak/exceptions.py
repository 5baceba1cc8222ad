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
