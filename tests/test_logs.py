"""Logging: one line per event, secrets redacted everywhere, journald priority prefixes."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
from datetime import UTC

import pytest
import structlog

from daemon import logs
from sandbox.testbed import REPO


@pytest.fixture
def capture() -> io.StringIO:
    return io.StringIO()


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_kv_line_has_event_name_first_then_keys(capture: io.StringIO) -> None:
    logs.configure("kv", "debug", stream=capture)
    structlog.get_logger().info("sync.page_committed", account="main", resource="offers", page=7, elapsed_s=0.21)
    (line,) = _lines(capture)
    assert line.split(" ", 2)[1:] == ["info", "sync.page_committed account=main resource=offers page=7 elapsed_s=0.21"]


def test_values_with_spaces_are_quoted_and_multiline_stays_one_line(capture: io.StringIO) -> None:
    logs.configure("kv", "info", stream=capture)
    structlog.get_logger().warning("x.y", error="two words\nsecond line")
    (line,) = _lines(capture)
    assert 'error="two words\\nsecond line"' in line


@pytest.mark.parametrize(
    "secret_text",
    [
        "postgresql://app:hunter2@db:5432/erp",
        "Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        "{'Authorization': 'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=='}",
        "host=db password=hunter2 dbname=erp",
        '{"password": "hunter2"}',
    ],
)
def test_secret_shapes_are_redacted(capture: io.StringIO, secret_text: str) -> None:
    logs.configure("kv", "info", stream=capture)
    structlog.get_logger().error("db.failed", error=secret_text)
    out = capture.getvalue()
    assert "hunter2" not in out and "QWxhZGRpbjpvcGVu" not in out
    assert "***" in out


def test_known_secrets_and_secret_keys_are_redacted_in_exceptions(capture: io.StringIO) -> None:
    logs.configure("json", "info", stream=capture, secrets=["s3cret-main"])
    log = structlog.get_logger()
    log.info("cfg.loaded", password="s3cret-main", db_password="abc", nested={"token": "t0k3n", "ok": 1})
    try:
        raise RuntimeError("login failed for seller with s3cret-main")
    except RuntimeError:
        log.exception("sync.run_crashed")
    out = capture.getvalue()
    assert "s3cret-main" not in out and "abc" not in out and "t0k3n" not in out
    first, second = (json.loads(line) for line in _lines(capture))
    assert first["password"] == "***" and first["nested"] == {"token": "***", "ok": 1}
    assert "RuntimeError: login failed for seller with ***" in second["exception"]


def test_ordinary_words_are_not_redacted(capture: io.StringIO) -> None:
    logs.configure("kv", "info", stream=capture)
    structlog.get_logger().error("cfg.error", error="accounts.main.password: missing secret")
    assert "missing secret" in capture.getvalue()


def test_level_filter(capture: io.StringIO) -> None:
    logs.configure("kv", "warning", stream=capture)
    log = structlog.get_logger()
    log.info("hidden")
    log.warning("shown")
    assert [line.split()[2] for line in _lines(capture)] == ["shown"]


def test_journal_stream_gets_priority_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryFile("w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.configure("kv", "debug", stream=stream)
        log = structlog.get_logger()
        log.debug("a.debug")
        log.info("a.info")
        log.warning("a.warning")
        log.error("a.error")
        stream.seek(0)
        assert stream.read().splitlines() == ["<7>a.debug", "<6>a.info", "<4>a.warning", "<3>a.error"]


def test_other_stream_is_not_treated_as_journal(monkeypatch: pytest.MonkeyPatch, capture: io.StringIO) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    logs.configure("kv", "info", stream=capture)
    structlog.get_logger().info("a.info")
    assert not capture.getvalue().startswith("<")


def test_json_under_journal_is_prefixed_too(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryFile("w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.configure("json", "info", stream=stream)
        structlog.get_logger().warning("a.b", k=1)
        stream.seek(0)
        line = stream.read().strip()
        assert line.startswith("<4>{")
        assert json.loads(line[3:])["event"] == "a.b"


def test_library_logs_go_through_the_same_renderer_one_entry_each(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryFile("w+") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.configure("kv", "info", stream=stream, secrets=["s3cret-db"])
        try:
            raise ConnectionResetError("lost postgresql://u:s3cret-db@db/erp")
        except ConnectionResetError:
            logging.getLogger("asyncpg.pool").exception("Failed to restore the pool connection floor")
        logging.getLogger("aiohttp.client").debug("below the level: not shown")
        logging.getLogger("asyncio").warning("Executing <Task> took 1.2 seconds")
        stream.seek(0)
        lines = stream.read().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith('<3>asyncpg.pool message="Failed to restore the pool connection floor" exception=')
    assert "ConnectionResetError" in lines[0] and "s3cret-db" not in lines[0]
    assert lines[1] == '<4>asyncio message="Executing <Task> took 1.2 seconds"'


def test_an_uncaught_exception_is_one_critical_entry(tmp_path) -> None:
    journal = tmp_path / "journal"
    code = (
        "import os, sys; from daemon import logs; f = open(sys.argv[1], 'w'); st = os.fstat(f.fileno()); "
        "os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'; logs.configure('kv', 'info', stream=f); "
        "raise RuntimeError('boom')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(journal)], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 1 and proc.stderr == ""  # nothing bypasses the logger
    (line,) = journal.read_text().splitlines()
    assert line.startswith("<2>process.crashed exception=") and "RuntimeError: boom" in line


def test_a_datetime_is_quoted_once(capture: io.StringIO) -> None:
    from datetime import datetime

    logs.configure("kv", "info", stream=capture)
    structlog.get_logger().info("sync.resuming", scan_started_at=datetime(2026, 11, 30, 10, 27, 41, tzinfo=UTC))
    assert capture.getvalue().rstrip().endswith('sync.resuming scan_started_at="2026-11-30 10:27:41+00:00"')
