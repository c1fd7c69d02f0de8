"""Running deploy_sync_system.sh in tests: under a temporary root (--root), with a stand-in
emag-sync in a stand-in venv (--venv-from), and reading the steps it prints."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sandbox.testbed import REPO

SCRIPT = REPO / "deploy_sync_system.sh"
UNITS = ("emag-sync.service", "emag-sync-monitor.service")

# The stand-in emag-sync: logs each call (args and the credentials it was handed) and
# exits with $FAKE_CHECK_CONFIG_RC for check-config.
FAKE_EMAG_SYNC = """#!/bin/sh
{
  printf 'call:'; printf ' %s' "$@"; printf '\\n'
  if [ -n "${CREDENTIALS_DIRECTORY:-}" ]; then
    for f in "$CREDENTIALS_DIRECTORY"/*; do printf 'cred: %s=%s\\n' "${f##*/}" "$(cat "$f")"; done
  fi
} >>"$FAKE_LOG"
case " $* " in *" check-config "*) exit "${FAKE_CHECK_CONFIG_RC:-0}" ;; esac
exit 0
"""


def deploy(
    *args: str, root: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(SCRIPT), *args]
    if root is not None:
        cmd += ["--root", str(root)]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)


def steps(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def assert_in_order(found: list[str], wanted: list[str]) -> None:
    """Each wanted fragment appears in some step, and in this order."""
    positions, start = [], 0
    for fragment in wanted:
        index = next((i for i in range(start, len(found)) if fragment in found[i]), None)
        assert index is not None, f"{fragment!r} not found after step {start} in:\n" + "\n".join(found)
        positions.append(index)
        start = index + 1


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under root with its mode, mtime and content (or link target)."""
    result = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            body = "-> " + os.readlink(path)
        elif path.is_file():
            body = path.read_text(errors="replace")
        else:
            body = ""
        result[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, body)
    return result


def configured(root: Path, fake_venv: Path) -> tuple[Path, Path]:
    """A first install, then the operator's config and both secrets: ready for an upgrade."""
    proc = deploy("--venv-from", str(fake_venv), root=root)
    assert proc.returncode == 0, proc.stderr
    etc = root / "etc/emag-sync"
    (etc / "emag-sync.toml").write_text("# the operator's own config\n")
    for account in ("main", "fbe"):
        (etc / f"{account}.password").write_text(f"{account}-secret\n")
    return etc, root / "opt/emag-sync"


def venv_dirs(opt: Path) -> list[str]:
    return sorted(p.name for p in opt.iterdir() if p.name.startswith("venv-") and p.is_dir())
