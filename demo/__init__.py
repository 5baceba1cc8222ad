"""The local staging stack: an embedded PostgreSQL server, the demo app and its load."""

import sys
from pathlib import Path

# The demo seeds the ledger with the package's own definition of it (plugins/migration_soak):
# make the package importable however the demo is started (python -m demo.stack, a container).
_PLUGINS = str(Path(__file__).resolve().parents[1] / "plugins")
if _PLUGINS not in sys.path:
    sys.path.append(_PLUGINS)
