"""Programs the suite drives that PyPI does not ship. A test that needs one fails and names
the fix rather than skip: a skipped alert-rule test looks like a passing one."""

from __future__ import annotations

import shutil
from pathlib import Path


def debian_tool(name: str, package: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    assert Path(path).exists(), (
        f"{name} is not installed: ./deploy_sync_system.sh --local installs it when run as root "
        f"(apt-get install {package})"
    )
    return path
