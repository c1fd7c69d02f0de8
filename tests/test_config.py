"""Configuration: every error is one line naming the key, exit 78; env precedence; masking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon import cli
from daemon.config import ConfigError, database_url_from_env, load, mask_dsn

GOOD = """
[database]
url = "postgresql://postgres:dbsecret@127.0.0.1:5432/test"

[accounts.main]
base_url = "https://marketplace-api.emag.ro/api-3"
username = "seller@example.ro"
password = "s3cret-main"

[accounts.fbe]
base_url = "https://marketplace-api.emag.ro/api-3"
username = "fbe@example.ro"
password_file = "fbe.password"
order_type = 2

[monitor]
listen = "127.0.0.1:9108"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "fbe.password").write_text("s3cret-fbe\n")
    path = tmp_path / "emag-sync.toml"
    path.write_text(GOOD)
    return path


def test_good_config_loads_with_defaults(cfg: Path) -> None:
    s = load(str(cfg), env={})
    assert s.names == ("main", "fbe")
    assert s.account("fbe").password == "s3cret-fbe"
    assert s.account("fbe").order_type == 2
    assert s.account("main").order_type is None
    assert s.database.schema == "emag_sync"
    assert (s.monitor.host, s.monitor.port) == ("127.0.0.1", 9108)
    assert s.account("main").interval_s("orders") == 120.0
    assert s.stuck_threshold_s == 3 * s.sync.heartbeat_interval_s + 30


def test_config_path_from_env(cfg: Path) -> None:
    assert load(None, env={"EMAG_SYNC_CONFIG": str(cfg)}).source == str(cfg)


def _edit(cfg: Path, old: str, new: str) -> None:
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new))


ERRORS = [
    # (edit old, edit new, expected key in the message)
    ('password = "s3cret-main"', 'password = "s3cret-main"\ncolour = "red"', "accounts.main.colour: unknown key"),
    ("[monitor]", "[monitr]", "monitr: unknown key"),
    ('password_file = "fbe.password"', 'password_file = "nope.password"', "accounts.fbe.password_file: cannot read"),
    ('password = "s3cret-main"', "", "accounts.main.password: missing secret"),
    (
        'base_url = "https://marketplace-api.emag.ro/api-3"\nusername = "seller',
        'base_url = "ftp://x"\nusername = "seller',
        "accounts.main.base_url: expected an http(s) URL",
    ),
    ('url = "postgresql://', 'url = "mysql://', "database.url: expected a postgresql:// URL"),
    ("order_type = 2", "order_type = 7", "accounts.fbe.order_type: 7 is out of range"),
    ("order_type = 2", 'order_type = "2"', "accounts.fbe.order_type: expected an integer"),
    ("[monitor]", "[sync]\nmax_pages = 0\n[monitor]", "sync.max_pages: 0 is out of range"),
    ("[monitor]", "[sync]\npage_size = 500\n[monitor]", "sync.page_size: 500 is out of range"),
    ('listen = "127.0.0.1:9108"', 'listen = "localhost"', "monitor.listen: expected HOST:PORT"),
    ("order_type = 2", 'timezone = "Mars/Olympus"', "accounts.fbe.timezone: unknown time zone"),
    ("[accounts.main]", '[accounts."bad name"]', "accounts.bad name: names are"),
    ("[database]", "[database\n", "TOML syntax error"),
    ('username = "fbe@example.ro"', 'username = "fbe:ro"', "accounts.fbe.username: 'fbe:ro' is not valid (HTTP Basic"),
    ("[monitor]", "[sync]\ntimeout_s = 14400\n[monitor]", "monitor.max_run_age_s: 14400 s must exceed sync.timeout_s"),
]


@pytest.mark.parametrize(("old", "new", "expected"), ERRORS, ids=[e[2].split(":")[0] for e in ERRORS])
def test_every_error_is_one_line_exit_78(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, old: str, new: str, expected: str
) -> None:
    for name in ("DATABASE_URL", "DATABASE_SYNC_URL", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    _edit(cfg, old, new)
    assert cli.main(["--config", str(cfg), "check-config", "--secrets"]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err


def test_missing_file_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(tmp_path / "none.toml"), "check-config"]) == 78
    err = capsys.readouterr().err
    assert "none.toml" in err and err.count("\n") == 1


def test_bad_env_number_exit_78(cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAG_SYNC_MAX_PAGES", "lots")
    assert cli.main(["--config", str(cfg), "check-config"]) == 78
    assert "EMAG_SYNC_MAX_PAGES: expected an integer" in capsys.readouterr().err


def test_console_script_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[database]\nurl = 42\n")
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(tmp_path / "c.toml"), "migrate"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert proc.stderr.strip().splitlines() == [
        "emag-sync: configuration error: database.url: expected a non-empty string"
    ]


def test_env_overrides_use_the_old_names(cfg: Path) -> None:
    env = {
        "EMAG_SYNC_MAX_PAGES": "77",
        "EMAG_SYNC_TIMEOUT_HOURS": "0.5",
        "EMAG_SYNC_BATCH_SIZE": "50",
        "EMAG_SYNC_PROGRESS_INTERVAL": "5",
        "EMAG_SYNC_MONITOR_INTERVAL": "12",
        "EMAG_SYNC_STUCK_THRESHOLD_HOURS": "3",
        "EMAG_SYNC_METRICS_PORT": "9200",
    }
    s = load(str(cfg), env=env)
    assert s.sync.max_pages == 77
    assert s.sync.timeout_s == 1800
    assert s.sync.page_size == 50
    assert s.sync.heartbeat_interval_s == 5
    assert s.monitor.interval_s == 12
    assert s.monitor.max_run_age_s == 3 * 3600
    assert s.monitor.port == 9200


def test_database_url_precedence() -> None:
    parts = {"DB_HOST": "db", "DB_PORT": "6543", "DB_USER": "app", "DB_PASS": "p@ss", "DB_NAME": "erp"}
    assert database_url_from_env(parts) == "postgresql://app:p%40ss@db:6543/erp"
    assert database_url_from_env({**parts, "DB_PASSWORD": "other"}) == "postgresql://app:other@db:6543/erp"
    with_url = {**parts, "DATABASE_URL": "postgresql+asyncpg://u@h/general"}
    assert database_url_from_env(with_url) == "postgresql://u@h/general"
    assert database_url_from_env({**with_url, "DATABASE_SYNC_URL": "postgres://u@h/sync"}) == "postgresql://u@h/sync"
    assert database_url_from_env({}) is None


def test_env_database_url_beats_toml(cfg: Path) -> None:
    s = load(str(cfg), env={"DATABASE_URL": "postgresql://x@elsewhere/db"})
    assert s.database.url == "postgresql://x@elsewhere/db"


def test_credentials_directory(cfg: Path, tmp_path: Path) -> None:
    _edit(cfg, 'password = "s3cret-main"', "")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "main.password").write_text("from-systemd\n")
    assert load(str(cfg), env={"CREDENTIALS_DIRECTORY": str(creds)}).account("main").password == "from-systemd"


def test_systemd_credential_wins_over_password_file(cfg: Path, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "fbe.password").write_text("from-systemd\n")
    (cfg.parent / "fbe.password").chmod(0)  # root-only on a real host: the service user cannot read it
    assert load(str(cfg), env={"CREDENTIALS_DIRECTORY": str(creds)}).account("fbe").password == "from-systemd"


def test_monitor_needs_no_secrets(cfg: Path) -> None:
    _edit(cfg, 'password = "s3cret-main"', "")
    s = load(str(cfg), env={}, need_secrets=False)
    assert [a.password for a in s.accounts] == ["", ""]


def test_both_password_kinds_is_an_error(cfg: Path) -> None:
    _edit(cfg, 'password = "s3cret-main"', 'password = "a"\npassword_file = "fbe.password"')
    with pytest.raises(ConfigError, match="accounts.main.password: set password or password_file, not both"):
        load(str(cfg), env={})


def test_check_config_masks_secrets(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_SYNC_URL", raising=False)
    assert cli.main(["--config", str(cfg), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "dbsecret" not in out
    assert 'password = "***"' in out
    assert "postgresql://postgres:***@127.0.0.1:5432/test" in out
    assert "[accounts.fbe]" in out and "order_type = 2" in out
    assert 'listen = "127.0.0.1:9108"' in out


def test_mask_dsn() -> None:
    assert mask_dsn("postgresql://u:p@h:5/d") == "postgresql://u:***@h:5/d"
    assert mask_dsn("postgresql://u@h/d") == "postgresql://u@h/d"


def test_example_config_is_valid_and_documents_every_key(tmp_path: Path) -> None:
    from dataclasses import fields

    from daemon import config as c

    example = (Path(__file__).parent.parent / "config" / "emag-sync.toml.example").read_text()
    (tmp_path / "main.password").write_text("x")
    (tmp_path / "fbe.password").write_text("y")
    path = tmp_path / "example.toml"
    path.write_text(example.replace("/etc/emag-sync/", ""))
    s = load(str(path), env={})
    assert s.names == ("main", "fbe")
    for cls in (
        c.DatabaseSettings,
        c.SyncSettings,
        c.ScheduleSettings,
        c.MonitorSettings,
        c.LogSettings,
        c.AccountSettings,
        c.WebhookSettings,
    ):
        for f in fields(cls):
            if f.name in ("host", "port", "name", "password"):
                continue
            assert f.name in example, f"{cls.__name__}.{f.name} is not documented in the example"


def test_database_password_from_a_file_or_a_systemd_credential(cfg: Path, tmp_path: Path) -> None:
    _edit(cfg, 'url = "postgresql://postgres:dbsecret@', 'password_file = "db.password"\nurl = "postgresql://postgres@')
    (tmp_path / "db.password").write_text("p@ss/word\n")
    assert load(str(cfg), env={}).database.url == "postgresql://postgres:p%40ss%2Fword@127.0.0.1:5432/test"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "database.password").write_text("from-systemd")
    url = load(str(cfg), env={"CREDENTIALS_DIRECTORY": str(creds)}).database.url
    assert url == "postgresql://postgres:from-systemd@127.0.0.1:5432/test"


def test_database_password_twice_is_an_error(cfg: Path, tmp_path: Path) -> None:
    _edit(cfg, 'url = "postgresql://', 'password_file = "db.password"\nurl = "postgresql://')
    (tmp_path / "db.password").write_text("x")
    with pytest.raises(ConfigError, match="database.password_file: the URL has a password too"):
        load(str(cfg), env={})
