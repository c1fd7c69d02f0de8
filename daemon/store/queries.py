"""Loads queries.sql and the numbered migrations once, with the schema quoted once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _render(text: str, schema: str) -> str:
    return text.replace("{schema}", quote_ident(schema))


def load_queries(schema: str) -> dict[str, str]:
    """Every named query of the store's .sql files (queries.sql, monitor.sql, ...)."""
    queries: dict[str, str] = {}
    for entry in sorted(resources.files("daemon.store").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        parts = _NAME.split(entry.read_text(encoding="utf-8"))[1:]
        for name, body in zip(parts[::2], parts[1::2], strict=True):
            if name in queries:
                raise RuntimeError(f"{entry.name}: duplicate query name {name}")
            queries[name] = _render(body.strip(), schema)
    return queries


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(schema: str) -> list[Migration]:
    folder = resources.files("daemon.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], _render(entry.read_text(encoding="utf-8"), schema)))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError("migrations must be numbered 0001, 0002, ... without gaps")
    return found


def latest_version() -> int:
    return len(load_migrations("x"))
