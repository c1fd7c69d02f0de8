"""Where secrets come from: inline, systemd's $CREDENTIALS_DIRECTORY (LoadCredential=, how
a service user gets a root-only file), or a file; one line of ConfigError when they fail."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from daemon.settings import ConfigError


def read_file(key: str, path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"{key}: {path} is empty")
    return secret


def credential(env: Mapping[str, str], file_name: str, key: str, required: bool = True) -> str | None:
    """systemd's copy of a secret, $CREDENTIALS_DIRECTORY/<file_name>, if the unit loads one.
    An unreadable directory is an error when the secret is `required`; otherwise it is
    passed over (systemd 252 hides it from ExecReload= commands, which check the file only)."""
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if not cred_dir:
        return None
    path = Path(cred_dir) / file_name
    try:
        if not path.exists():
            return None
    except OSError as exc:  # the directory itself is unreadable to this user
        if not required:
            return None
        raise ConfigError(f"{key}: cannot read $CREDENTIALS_DIRECTORY ({cred_dir}): {exc.strerror}") from None
    return read_file(key, path)


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string")
    return value


def secret(
    table: dict[str, Any], prefix: str, key: str, credential_name: str, env: Mapping[str, str], base: Path, need: bool
) -> str:
    """Inline `key` (its table's own), else $CREDENTIALS_DIRECTORY/<credential_name>, else
    `<key>_file`; popped from `table`. "" when not `need`ed and not inline."""
    inline, path = table.pop(key, None), table.pop(f"{key}_file", None)
    if inline is not None and path is not None:
        raise ConfigError(f"{prefix}.{key}: set {key} or {key}_file, not both")
    if path is not None:
        path = base / _text(f"{prefix}.{key}_file", path)
    if inline is not None:
        return _text(f"{prefix}.{key}", inline)
    if not need:
        return ""
    found = credential(env, credential_name, f"{prefix}.{key}")
    if found is not None:
        return found
    if path is not None:
        return read_file(f"{prefix}.{key}_file", path)
    raise ConfigError(
        f"{prefix}.{key}: missing secret (set {key}_file, {key}, or provide $CREDENTIALS_DIRECTORY/{credential_name})"
    )


def database_url(table: dict[str, Any], env: Mapping[str, str], base: Path, need_secrets: bool) -> str:
    """database.url with its password: systemd's $CREDENTIALS_DIRECTORY/database.password, else
    `password_file` (0640 root:emag-sync, so the services and operators of the group read it),
    else whatever the URL holds. The URL is normalized already."""
    url = table["url"]
    path = table.pop("password_file", None)
    found = credential(env, "database.password", "database.password", required=need_secrets)
    if found is None and path is not None:
        found = read_file("database.password_file", base / _text("database.password_file", path))
    if found is None:
        return url
    parts = urlsplit(url)
    if parts.password is not None:
        raise ConfigError("database.password_file: the URL has a password too; keep one of them")
    if not parts.username:
        raise ConfigError("database.url: name the role (postgresql://ROLE@HOST/DB) when its password is in a file")
    netloc = f"{parts.username}:{quote(found, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, *parts[2:]))
