"""Who may read what: commands that do not call eMAG work for a user who may read the
configuration but not the root-only password files, and an unreadable systemd credentials
directory is a one-line configuration error (exit 78), not a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import DEFAULT_LOGINS
from sandbox.testbed import REPO, config_doc, write_config

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run commands as another user")


@pytest.fixture
def etc() -> Iterator[Path]:
    """A world-traversable directory (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="emag-sync-etc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def as_nobody(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`emag-sync ARGS` as an unprivileged user, from this checkout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "DB_", "CREDENTIALS"))}
    clean["HOME"] = "/nonexistent"  # as systemd gives the service user (no home)
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-m",
            "daemon.cli",
            *args,
        ],
        cwd=REPO,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _config(etc: Path, db_url: str) -> Path:
    doc = config_doc(db_url, "http://127.0.0.1:9/api-3", accounts=("main",))
    password = doc["accounts"]["main"].pop("password")
    doc["accounts"]["main"]["password_file"] = str(etc / "main.password")
    (etc / "main.password").write_text(password + "\n")
    (etc / "main.password").chmod(0o600)  # root-only, as the README recommends
    config = write_config(etc / "emag-sync.toml", doc)
    config.chmod(0o644)
    return config


@pytest.mark.parametrize(
    "command",
    [["check-config"], ["status"], ["history"], ["migrate"], ["recover", "--older-than", "60"]],
    ids=lambda c: c[0],
)
def test_commands_that_do_not_call_emag_need_no_emag_password(etc: Path, db_url: str, command: list[str]) -> None:
    proc = as_nobody("--config", str(_config(etc, db_url)), *command)
    assert proc.returncode == 0, proc.stderr
    if command == ["check-config"]:
        assert 'password = "(not read)"' in proc.stdout


def test_commands_that_call_emag_still_need_it(etc: Path, db_url: str) -> None:
    config = str(_config(etc, db_url))
    for command in (["check-config", "--secrets"], ["once"]):
        proc = as_nobody("--config", config, *command)
        assert proc.returncode == 78 and "main.password_file: cannot read" in proc.stderr, proc.stderr


def test_an_unreadable_credentials_directory_is_a_config_error(etc: Path, db_url: str) -> None:
    creds = etc / "credentials"
    creds.mkdir(mode=0o700)  # root's: what a service user sees of another unit's credentials
    (creds / "main.password").write_text(DEFAULT_LOGINS["main"].password)
    for command in (["check-config", "--secrets"], ["run"]):
        proc = as_nobody("--config", str(_config(etc, db_url)), *command, env={"CREDENTIALS_DIRECTORY": str(creds)})
        assert proc.returncode == 78, proc.stderr
        assert proc.stderr.count("\n") == 1 and "cannot read $CREDENTIALS_DIRECTORY" in proc.stderr, proc.stderr
