"""`python -m sandbox` as operators and scripts run it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from sandbox import DEFAULT_LOGINS
from sandbox.cli import main, parse_account
from sandbox.testbed import REPO
from tests.logins import auth


async def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout_s: float = 15.0) -> str:
    for _ in range(int(timeout_s / 0.05)):
        if path.exists():
            return path.read_text().strip()
        assert proc.poll() is None, "the sandbox exited before it was ready"
        await asyncio.sleep(0.05)
    raise AssertionError("the sandbox never wrote its ready file")


@pytest.mark.asyncio
async def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"kind": "status", "status": 503, "account": "fbe", "request": 1}]))
    main_login, fbe_login = DEFAULT_LOGINS["main"], DEFAULT_LOGINS["fbe"]
    argv = [
        sys.executable, "-m", "sandbox", "--port", "0", "--ready-file", str(ready), "--offers", "30",
        "--orders", "20", "--faults", str(faults), "--mutate-every", "0.1",
        "--account", f"main:{main_login.username}:{main_login.password}",
        "--account", f"fbe:{fbe_login.username}:{fbe_login.password}:2:Europe/Sofia",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base_url = await wait_for_file(ready, proc)
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api-3")
        main_auth, fbe_auth = auth("main"), auth("fbe")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base_url}/product_offer/count", json={}, headers=main_auth) as resp:
                assert (await resp.json())["results"]["noOfItems"] == "30"
            async with session.post(f"{base_url}/order/count", json={"type": 2}, headers=fbe_auth) as resp:
                assert resp.status == 503, "the fault file applies to fbe"
            await asyncio.sleep(0.35)
            async with session.post(f"{base_url}/order/count", json={"type": 2}, headers=fbe_auth) as resp:
                assert int((await resp.json())["results"]["noOfItems"]) > 20, "--mutate-every adds orders"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    started = [line for line in stderr.splitlines() if "sandbox.started" in line]
    assert len(started) == 1 and base_url in started[0] and fbe_login.username in started[0]
    assert main_login.password not in stderr and fbe_login.password not in stderr


def test_parse_account() -> None:
    account = parse_account("bg:seller@x.bg:pw:2:Europe/Sofia")
    assert (account.name, account.username, account.password, account.order_type, account.timezone) == (
        "bg", "seller@x.bg", "pw", 2, "Europe/Sofia",
    )  # fmt: skip
    assert parse_account("a:b:c").order_type == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["--account", "only-a-name"],
        ["--account", "a:b:c:x"],
        ["--account", "a:b:c:3:Mars/Olympus"],
        ["--rate-limit", "sometimes"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_fault_file_for_unknown_account_exits_2(tmp_path: Path) -> None:
    faults = tmp_path / "faults.toml"
    faults.write_text('[[faults]]\nkind = "reset"\naccount = "ghost"\n')
    with pytest.raises(SystemExit) as exc:
        main(["--faults", str(faults), "--offers", "1", "--orders", "1"])
    assert exc.value.code == 2
