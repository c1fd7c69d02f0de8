"""emag-sync installed on a live systemd host (a `Box`) the way the README tells an operator:
`./deploy_sync_system.sh` (first install), edit the configuration, put the passwords in
place, `./deploy_sync_system.sh` again (check-config, migrate, start, health check).

The box's venvs are built offline from a wheelhouse made once on the host per
pyproject.toml and interpreter, so a module's install takes seconds, not a PyPI round.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import toml_text
from tests.live.box import Box
from tests.processes import query

REPO = Path(__file__).resolve().parents[2]
# The service user must be able to run the venv's interpreter, so not one under /root
# (pyenv): Debian's, which has venv.
BOX_PYTHON = Path("/usr/bin/python3")
CONFIG = "/etc/emag-sync/emag-sync.toml"
PASSWORDS = {"main": "sandbox-main", "fbe": "sandbox-fbe"}
USERNAMES = {"main": "main@sandbox.test", "fbe": "fbe@sandbox.test"}


def python_refusal(python: Path = BOX_PYTHON) -> str | None:
    """Why `python` cannot build the box's venvs (one line), or None."""
    try:
        probe = subprocess.run(
            [str(python), "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return f"{python} not found (install python3 >= 3.11 and python3-venv)"
    if probe.returncode != 0:
        return f"{python} is not Python >= 3.11 with venv and ensurepip (install python3-venv)"
    return None


def wheelhouse(cache: Path, python: Path = BOX_PYTHON) -> Path:
    """Wheels of the project's build and runtime requirements for `python`, pinned by
    constraints.txt as the installer pins them, in a directory keyed by pyproject.toml,
    the constraints and the interpreter's version: built once, then reused."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    constraints = REPO / "constraints.txt"
    meta = tomllib.loads(pyproject.decode())
    requirements = [*meta["build-system"]["requires"], *meta["project"]["dependencies"]]
    version = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    target = (
        cache
        / f"live-wheels-{hashlib.sha256(pyproject + constraints.read_bytes() + version.encode()).hexdigest()[:16]}"
    )
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".building-") as tmp:
        venv, wheels = Path(tmp) / "venv", Path(tmp) / "wheels"
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True, timeout=120)
        built = subprocess.run(
            [
                str(venv / "bin" / "pip"),
                "wheel",
                "-q",
                "--disable-pip-version-check",
                "--wheel-dir",
                str(wheels),
                "-c",
                str(constraints),
                *requirements,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}{built.stderr}"
        try:
            wheels.rename(target)  # atomic: a parallel session that won the race built the same
        except OSError:
            assert target.is_dir()
    return target


def live_config(db_url: str, base_url: str, monitor_port: int) -> dict[str, Any]:
    """Both sandbox accounts, their passwords in files (handed over by LoadCredential=), runs
    every few seconds, and a monitor that fails dead runs within seconds."""
    accounts: dict[str, Any] = {
        name: {"base_url": base_url, "username": USERNAMES[name], "password_file": f"/etc/emag-sync/{name}.password"}
        for name in PASSWORDS
    }
    accounts["fbe"]["order_type"] = 2
    return {
        "database": {"url": db_url},
        "accounts": accounts,
        "sync": {"heartbeat_interval_s": 1.0},
        "schedule": {"offers_interval_s": 20.0, "orders_interval_s": 10.0, "jitter_s": 1.0, "shutdown_grace_s": 1.0},
        "monitor": {"listen": f"127.0.0.1:{monitor_port}", "interval_s": 2.0, "stuck_threshold_s": 5.0},
    }


@dataclass
class LiveHost:
    """A box with emag-sync installed and running, and what the tests need to drive it."""

    box: Box
    db_url: str
    base_url: str
    config: dict[str, Any]
    figures: dict[str, float]

    @property
    def health_url(self) -> str:
        return f"http://{self.config['monitor']['listen']}/healthz"

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command inside the box that must succeed."""
        proc = self.box.run(*argv, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        return proc

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run("systemctl", "show", "-p", ",".join(properties), unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, name: str) -> str:
        return self.show(unit, name)[name]

    def journal(self, unit: str, *args: str) -> list[str]:
        """The unit's journal messages (`-o cat`: no timestamp, no prefix), oldest first."""
        return self.run("journalctl", "--no-pager", "-o", "cat", "-u", unit, *args).stdout.splitlines()

    def runs(self, sql_filter: str = "TRUE", *args: object) -> list[dict[str, Any]]:
        return query(
            self.db_url,
            "SELECT id, account, resource, status, pages_done, pages_total, error "
            f"FROM emag_sync.sync_runs WHERE {sql_filter} ORDER BY id",
            *args,
        )


def deploy(box: Box, wheels: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installer as the README runs it; it finds the monitor's /healthz from [monitor].listen."""
    env = {"PYTHON": str(BOX_PYTHON), "EMAG_SYNC_DEPLOY_PIP_ARGS": f"--no-index --find-links {wheels}"}
    proc = box.run("env", "-C", str(REPO), "./deploy_sync_system.sh", *args, env=env, timeout=300)
    assert proc.returncode == 0, f"deploy_sync_system.sh exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc


def install(box: Box, wheels: Path, db_url: str, base_url: str, monitor_port: int) -> LiveHost:
    """First install, configuration and passwords, then the upgrade run that starts both units."""
    config = live_config(db_url, base_url, monitor_port)
    host = LiveHost(box, db_url, base_url, config, {})
    began = time.monotonic()
    first = deploy(box, wheels)
    assert "first install" in first.stdout, first.stdout
    host.figures["first_install_s"] = time.monotonic() - began
    write = 'umask "$1" && cat >"$2"'
    box.run("sh", "-c", write, "sh", "027", CONFIG, input=toml_text(config), check=True)
    for name, password in PASSWORDS.items():
        box.run("sh", "-c", write, "sh", "077", f"/etc/emag-sync/{name}.password", input=password + "\n", check=True)
    began = time.monotonic()
    second = deploy(box, wheels)
    assert re.search(r"^==> healthy$", second.stdout, re.MULTILINE), second.stdout
    assert f"{host.health_url} answering" in second.stdout  # the monitor as configured, not :9108
    host.figures["upgrade_s"] = time.monotonic() - began
    return host


def save_journal(box: Box, path: Path) -> None:
    """The box's whole journal, for a post-mortem; nothing if the box is already gone."""
    if box.pid is None:
        return
    try:
        journal = box.run("journalctl", "-b", "--no-pager", "-o", "short-precise", timeout=60)
    except subprocess.TimeoutExpired:
        return
    path.write_text(journal.stdout + journal.stderr)
