"""The export file of `crdt-state export` / `import` (transfer.py; docs/OPERATIONS.md, "Backup
and move"), and the records the LogTransfer port carries.

JSON Lines, one record a line, each with its `type`:

    header      format "crdt-state-export", formatVersion 1, workspaceId, exportedAt,
                sourceStore, serverVersion, panels (how many follow)
    panel       panelId, epoch, version, createdBy, createdAt, updatedAt, deletedAt,
                compactedThrough, historyThrough: the panel's row
    checkpoint  panelId, version, epoch, state (base64), createdAt: those a load can use
    entry       panelId, version, epoch, changeType, update (base64; empty once folded),
                patch, triggeredBy, triggerSource, subject, occurredAt, changeId
    view        panelId, version, epoch, state: a live panel's JSON view at its version
    end         panels, deletedPanels, entries, checkpoints, sha256 (of every byte before it)

Per panel (by panel id): its panel line, its checkpoints by version, every history row it keeps
(all epochs) oldest first, then its view unless it is deleted. Times are ISO 8601 in UTC, to the
microsecond the stores keep.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .model import ChangeType, JSONObject, LogEntry, PanelInfo, PanelKey, TriggeredBy, parse_time

FORMAT = "crdt-state-export"
FORMAT_VERSION = 1


class TransferError(Exception):
    """A file that cannot be imported, or an export or import refused: nothing was written."""


class WorkspaceExists(TransferError):
    pass


# -- the records of the LogTransfer port -------------------------------------------------------


@dataclass(slots=True)
class PanelRecord:
    """A panel's row: what its history rows do not say."""

    key: PanelKey
    epoch: str
    version: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    compacted_through: int  # the fold point (0: never compacted)
    history_through: int  # rows up to this version were removed (0: none)

    @property
    def info(self) -> PanelInfo:
        return PanelInfo(
            self.key, self.epoch, self.version, self.created_by, self.created_at, self.updated_at
        )


@dataclass(slots=True)
class StoredCheckpoint:
    version: int
    epoch: str
    state: bytes
    created_at: datetime


@dataclass(slots=True)
class TransferEntry(LogEntry):
    """A history row as stored: a log entry and its change id (None once folded)."""

    change_id: str | None = None


@dataclass(slots=True)
class TransferSummary:
    command: str  # export or import
    workspace_id: str
    store: str
    source_workspace_id: str = ""
    source_store: str = ""
    panels: int = 0
    deleted: int = 0
    entries: int = 0
    checkpoints: int = 0
    bytes: int = 0
    sha256: str = ""
    replaced: int = 0
    seconds: float = 0.0
    location: str = "-"

    def to_json(self) -> JSONObject:
        answer: JSONObject = {
            "command": self.command,
            "workspaceId": self.workspace_id,
            "store": self.store,
            "panels": self.panels,
            "deletedPanels": self.deleted,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
            "file": self.location,
        }
        if self.command == "import":
            answer |= {
                "sourceWorkspaceId": self.source_workspace_id,
                "sourceStore": self.source_store,
                "replacedPanels": self.replaced,
                "verifiedViews": self.panels - self.deleted,
            }
        return answer

    def text(self) -> str:
        counts = (
            f"{self.panels:,} panels ({self.deleted:,} deleted), {self.entries:,} versions, "
            f"{self.checkpoints:,} checkpoints, {self.bytes:,} bytes"
        )
        if self.command == "export":
            return (
                f"exported workspace {self.workspace_id} ({self.store}) to {self.location}: "
                f"{counts} in {self.seconds:.2f} s; sha256 {self.sha256}"
            )
        replaced = f"; replaced {self.replaced:,} panels" if self.replaced else ""
        return (
            f"imported workspace {self.source_workspace_id} ({self.source_store}) as "
            f"{self.workspace_id} ({self.store}) from {self.location}: {counts}, every view "
            f"verified{replaced}, in {self.seconds:.2f} s"
        )


# -- writing -----------------------------------------------------------------------------------


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Lines:
    """Lines out, each counted and hashed (the end record carries the hash of the others)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self.write, self.hash, self.bytes = write, hashlib.sha256(), 0

    def put(self, record: JSONObject) -> None:
        data = orjson.dumps(record) + b"\n"
        if record["type"] != "end":
            self.hash.update(data)
        self.bytes += len(data)
        self.write(data)


def header_json(workspace_id: str, store: str, server: str, panels: int) -> JSONObject:
    return {
        "type": "header",
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        "workspaceId": workspace_id,
        "exportedAt": _time(datetime.now(UTC)),
        "sourceStore": store,
        "serverVersion": server,
        "panels": panels,
    }


def panel_json(panel: PanelRecord) -> JSONObject:
    deleted = panel.deleted_at
    return {
        "type": "panel",
        "panelId": panel.key.panel_id,
        "epoch": panel.epoch,
        "version": panel.version,
        "createdBy": panel.created_by,
        "createdAt": _time(panel.created_at),
        "updatedAt": _time(panel.updated_at),
        "deletedAt": None if deleted is None else _time(deleted),
        "compactedThrough": panel.compacted_through,
        "historyThrough": panel.history_through,
    }


def checkpoint_json(panel_id: str, checkpoint: StoredCheckpoint) -> JSONObject:
    return {
        "type": "checkpoint",
        "panelId": panel_id,
        "version": checkpoint.version,
        "epoch": checkpoint.epoch,
        "state": _b64(checkpoint.state),
        "createdAt": _time(checkpoint.created_at),
    }


def entry_json(panel_id: str, entry: TransferEntry) -> JSONObject:
    return {
        "type": "entry",
        "panelId": panel_id,
        "version": entry.version,
        "epoch": entry.epoch,
        "changeType": entry.change_type.value,
        "update": _b64(entry.update),
        "patch": entry.patch,
        "triggeredBy": entry.triggered_by.value,
        "triggerSource": entry.trigger_source,
        "subject": entry.subject,
        "occurredAt": _time(entry.occurred_at),
        "changeId": entry.change_id,
    }


def view_json(panel: PanelRecord, view: JSONObject) -> JSONObject:
    return {
        "type": "view",
        "panelId": panel.key.panel_id,
        "version": panel.version,
        "epoch": panel.epoch,
        "state": view,
    }


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    workspace_id: str
    source_store: str
    panels: int


class ExportFile:
    """An export being read, line by line: each line checked, counted and hashed. The header
    is read at once: a file that is no export of this format is refused before anything."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self.number = self.bytes = 0
        self.hash = hashlib.sha256()
        head = self.next()
        if head.type != "header" or head.raw.get("format") != FORMAT:
            raise self.error(f"not a {FORMAT} file (it has no header)")
        version = head.raw.get("formatVersion")
        if version != FORMAT_VERSION:
            raise self.error(
                f"format version {version!r}: this crdt-state reads version {FORMAT_VERSION} "
                "(import it with a crdt-state that reads it)"
            )
        self.header = Header(
            head.text("workspaceId"), head.text("sourceStore"), head.count("panels")
        )

    def next(self) -> Record:
        data = next(self._lines, b"")
        self.number += 1
        self.bytes += len(data)
        if not data:
            raise self.error("the file ends before its end record: it is truncated")
        if not data.endswith(b"\n"):
            raise self.error("the file ends in the middle of a line: it is truncated")
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise self.error("not JSON: the file is damaged, or no export") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise self.error("not a record of an export")
        if raw["type"] != "end":
            self.hash.update(data)
        return Record(raw, self)

    def rest(self) -> bool:
        """Whether anything but blank lines follows."""
        return any(line.strip() for line in self._lines)

    def error(self, message: str) -> TransferError:
        return TransferError(f"line {self.number}: {message}; nothing was imported")


class Record:
    """One line's fields, each checked as it is read."""

    def __init__(self, raw: JSONObject, file: ExportFile) -> None:
        self.raw, self.file, self.type = raw, file, raw["type"]

    def bad(self, name: str, expected: str) -> TransferError:
        return self.file.error(f"{self.type} record: {name} must be {expected}")

    def text(self, name: str) -> str:
        value = self.raw.get(name)
        if not isinstance(value, str):
            raise self.bad(name, "a string")
        return value

    def maybe_text(self, name: str) -> str | None:
        return None if self.raw.get(name) is None else self.text(name)

    def count(self, name: str) -> int:
        value = self.raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.bad(name, "an integer, 0 or more")
        return value

    def time(self, name: str) -> datetime:
        value = parse_time(self.raw.get(name))
        if value is None:
            raise self.bad(name, "an ISO 8601 time")
        return value

    def maybe_time(self, name: str) -> datetime | None:
        return None if self.raw.get(name) is None else self.time(name)

    def data(self, name: str) -> bytes:
        try:
            return base64.b64decode(self.text(name), validate=True)
        except ValueError:
            raise self.bad(name, "base64") from None

    def panel(self, workspace_id: str) -> PanelRecord:
        panel = PanelRecord(
            PanelKey(workspace_id, self.text("panelId")),
            self.text("epoch"),
            self.count("version"),
            self.maybe_text("createdBy"),
            self.time("createdAt"),
            self.time("updatedAt"),
            self.maybe_time("deletedAt"),
            self.count("compactedThrough"),
            self.count("historyThrough"),
        )
        try:
            panel.key.check()
        except ValueError as exc:
            raise self.file.error(str(exc)) from None
        return panel

    def checkpoint(self) -> StoredCheckpoint:
        return StoredCheckpoint(
            self.count("version"), self.text("epoch"), self.data("state"), self.time("createdAt")
        )

    def entry(self, change_id: Callable[[str | None], str | None]) -> TransferEntry:
        patch = self.raw.get("patch")
        if patch is not None and not (
            isinstance(patch, list) and all(isinstance(op, dict) for op in patch)
        ):
            raise self.bad("patch", "null or a JSON Patch")
        return TransferEntry(
            self.count("version"),
            self.text("epoch"),
            self.data("update"),
            self._enum("changeType", ChangeType),
            self._enum("triggeredBy", TriggeredBy),
            self.maybe_text("triggerSource"),
            self.maybe_text("subject"),
            patch,
            self.time("occurredAt"),
            change_id(self.maybe_text("changeId")),
        )

    def _enum(self, name: str, kind: type[ChangeType] | type[TriggeredBy]) -> Any:
        try:
            return kind(self.text(name))
        except ValueError:
            raise self.bad(name, " or ".join(repr(k.value) for k in kind)) from None
