"""Schema migrations, one folder of numbered SQL files per database dialect."""

from __future__ import annotations

import re
from importlib import resources

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migration_files(dialect: str) -> list[tuple[int, str, str]]:
    """(number, name, sql) of every migrations/<dialect>/NNNN_name.sql, oldest first."""
    folder = resources.files(__name__).joinpath(dialect)
    if not folder.is_dir():
        raise ValueError(f"no migrations for dialect {dialect!r}")
    found: dict[int, tuple[int, str, str]] = {}
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue  # README, editor backups and the like are not migrations
        number, name = int(match[1]), match[2]
        if number in found:
            raise ValueError(f"two {dialect} migrations numbered {number:04d}")
        found[number] = (number, name, entry.read_text(encoding="utf-8"))
    return [found[number] for number in sorted(found)]
