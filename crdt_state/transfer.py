"""Backup and move (docs/OPERATIONS.md, "Backup and move"): a workspace out to a file and back
into any store, row for row, so that it reads the same, version for version, wherever it goes.
`crdt-state export` and `crdt-state import` run it through the store's LogTransfer port; the
file's format is in transfer_format.py.

An export reads the workspace from one consistent snapshot of the store. An import is one
transaction of the target store: it checks every line, writes the rows as they are (versions,
epochs, change ids, times, attribution, fold and drop points), reads each panel back inside the
transaction and compares its rebuilt view with the exported one, and commits only once the end
record's counts and checksum match. Anything wrong rolls it all back: the target is unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing, suppress
from typing import BinaryIO, Protocol, TextIO

import orjson

from . import __version__
from .compaction import Progress
from .errors import StateError
from .ids import check_workspace_id
from .model import Checkpoint, JSONObject, LoadedPanel, LogEntry, PanelKey, PanelView
from .panels import render
from .ports import LogTransfer, StateCache, WorkspaceWriter
from .transfer_format import (
    ExportFile,
    Lines,
    PanelRecord,
    Record,
    StoredCheckpoint,
    TransferEntry,
    TransferError,
    TransferSummary,
    checkpoint_json,
    entry_json,
    header_json,
    panel_json,
    view_json,
)

PAGE = 1000  # history rows per read and per write

ProgressCallback = Callable[[Progress], None]


# -- export ------------------------------------------------------------------------------------


async def export_workspace(
    source: LogTransfer,
    workspace_id: str,
    write: Callable[[bytes], object],
    progress: ProgressCallback | None = None,
) -> TransferSummary:
    """Write the workspace to `write`, from one consistent snapshot of `source`."""
    started = time.monotonic()
    summary = TransferSummary("export", workspace_id, source.kind)
    out = Lines(write)
    async with source.read_workspace(workspace_id) as reader:
        if not reader.panels:
            raise TransferError(f"workspace {workspace_id} has no panels in this store")
        count = len(reader.panels)
        out.put(header_json(workspace_id, source.kind, __version__, count))
        for index, panel in enumerate(reader.panels, 1):
            name = panel.key.panel_id

            def step(done: int, panel: PanelRecord = panel, index: int = index) -> None:
                if progress is not None:
                    progress(Progress(index, count, panel.key, done, panel.version))

            step(0)
            out.put(panel_json(panel))
            latest: StoredCheckpoint | None = None
            async with aclosing(reader.checkpoints(panel)) as checkpoints:
                async for latest in checkpoints:
                    out.put(checkpoint_json(name, latest))
                    summary.checkpoints += 1
            # What a load of the current version replays after the latest checkpoint.
            after = latest.version if latest is not None else 0
            tail: list[LogEntry] = []
            async with aclosing(reader.entries(panel.key, PAGE)) as pages:
                async for page in pages:
                    for entry in page:
                        out.put(entry_json(name, entry))
                        if entry.epoch == panel.epoch and after < entry.version <= panel.version:
                            tail.append(entry)
                    summary.entries += len(page)
                    step(page[-1].version if page else 0)
            summary.panels += 1
            if panel.deleted_at is not None:
                summary.deleted += 1
                continue
            checkpoint = None if latest is None else Checkpoint(latest.version, latest.state)
            view = await asyncio.to_thread(render, LoadedPanel(panel.info, checkpoint, tail))
            out.put(view_json(panel, view))
    summary.sha256 = out.hash.hexdigest()
    out.put(
        {
            "type": "end",
            "panels": summary.panels,
            "deletedPanels": summary.deleted,
            "entries": summary.entries,
            "checkpoints": summary.checkpoints,
            "sha256": summary.sha256,
        }
    )
    summary.bytes, summary.seconds = out.bytes, time.monotonic() - started
    return summary


# -- import ------------------------------------------------------------------------------------


class _Importer:
    def __init__(
        self,
        file: ExportFile,
        writer: WorkspaceWriter,
        summary: TransferSummary,
        progress: ProgressCallback | None,
    ) -> None:
        self.file, self.writer, self.summary, self.progress = file, writer, summary, progress
        self.panel_ids: list[str] = []
        # A copy under another workspace id gets change ids of its own: change ids are
        # unique in a store, which may hold the original too.
        self.renamed = summary.workspace_id != file.header.workspace_id

    async def run(self) -> None:
        record = self.file.next()
        while record.type != "end":
            if record.type != "panel":
                raise self.file.error(f"a {record.type} record where a panel record belongs")
            record = await self._panel(record.panel(self.summary.workspace_id))
        self._end(record)

    async def _panel(self, panel: PanelRecord) -> Record:
        name = panel.key.panel_id
        if name in self.panel_ids:
            raise self.file.error(f"panel {name} appears twice")
        self.panel_ids.append(name)
        self._step(panel, 0)
        await self.writer.panel(panel)
        record = self._next(name)
        while record.type == "checkpoint":
            await self.writer.checkpoint(panel.key, record.checkpoint())
            self.summary.checkpoints += 1
            record = self._next(name)
        record = await self._entries(panel, record)
        self.summary.panels += 1
        if panel.deleted_at is not None:
            self.summary.deleted += 1
            if await self.writer.load(panel.key) is not None:
                raise self.file.error(f"panel {name} is deleted, yet it loads once imported")
            return record
        if record.type != "view":
            raise self.file.error(f"a {record.type} record where panel {name}'s view belongs")
        view = record.raw.get("state")
        if not isinstance(view, dict):
            raise record.bad("state", "a JSON object")
        if (record.count("version"), record.text("epoch")) != (panel.version, panel.epoch):
            raise self.file.error(f"the view of panel {name} is not of its version and epoch")
        await self.writer.view(PanelView(panel.key, panel.epoch, panel.version, view))
        await self._verify(panel, view)
        return self._next(None)

    async def _entries(self, panel: PanelRecord, record: Record) -> Record:
        """Read and write the panel's history rows: gapless, oldest first, up to its version."""
        batch: list[TransferEntry] = []
        last = 0
        while record.type == "entry":
            entry = record.entry(self._change_id)
            if (last and entry.version != last + 1) or not 0 < entry.version <= panel.version:
                raise self.file.error(
                    f"version {entry.version} of panel {panel.key.panel_id} is out of order"
                )
            last = entry.version
            batch.append(entry)
            if len(batch) >= PAGE:
                await self._write(panel, batch)
            record = self._next(panel.key.panel_id)
        await self._write(panel, batch)
        if last and last != panel.version:
            raise self.file.error(
                f"the history of panel {panel.key.panel_id} ends at version {last}, "
                f"not at its version {panel.version}"
            )
        return record

    def _change_id(self, change_id: str | None) -> str | None:
        if change_id is None or not self.renamed:
            return change_id
        return hashlib.sha256(f"{self.summary.workspace_id}\0{change_id}".encode()).hexdigest()[:32]

    async def _write(self, panel: PanelRecord, batch: list[TransferEntry]) -> None:
        if batch:
            await self.writer.entries(panel.key, batch)
            self.summary.entries += len(batch)
            self._step(panel, batch[-1].version)
            batch.clear()

    async def _verify(self, panel: PanelRecord, view: JSONObject) -> None:
        """The panel read back from the target, inside the transaction, and rebuilt."""
        loaded = await self.writer.load(panel.key)
        if loaded is None or (loaded.info.version, loaded.info.epoch) != (
            panel.version,
            panel.epoch,
        ):
            raise self.file.error(f"panel {panel.key.panel_id} does not load as exported")
        if await asyncio.to_thread(render, loaded) != view:
            raise self.file.error(
                f"the view of panel {panel.key.panel_id} rebuilt from its imported log differs "
                f"from the exported view at version {panel.version}"
            )

    def _end(self, record: Record) -> None:
        if record.text("sha256") != self.file.hash.hexdigest():
            raise self.file.error("the checksum does not match: the file is damaged or changed")
        summary = self.summary
        counted = (summary.panels, summary.deleted, summary.entries, summary.checkpoints)
        names = ("panels", "deletedPanels", "entries", "checkpoints")
        listed = tuple(record.count(name) for name in names)
        if counted != listed or summary.panels != self.file.header.panels:
            raise self.file.error("the counts of the end record do not match the file")
        if self.file.rest():
            raise self.file.error("lines follow the end record")

    def _next(self, panel_id: str | None) -> Record:
        record = self.file.next()
        if panel_id is not None and record.type in ("checkpoint", "entry", "view"):
            if record.raw.get("panelId") != panel_id:
                raise self.file.error(f"a {record.type} record of another panel than {panel_id}")
        return record

    def _step(self, panel: PanelRecord, done: int) -> None:
        if self.progress is not None:
            total = self.file.header.panels
            self.progress(Progress(len(self.panel_ids), total, panel.key, done, panel.version))


async def import_workspace(
    target: LogTransfer,
    file: ExportFile,
    *,
    workspace_id: str | None = None,
    replace: bool = False,
    progress: ProgressCallback | None = None,
) -> tuple[TransferSummary, list[str]]:
    """Import the export into `target` (as `workspace_id`, by default the exported one), in one
    transaction; the summary, and every panel id the workspace has or had (for caches)."""
    started = time.monotonic()
    header = file.header
    workspace = workspace_id or header.workspace_id
    check_workspace_id(workspace)
    summary = TransferSummary("import", workspace, target.kind, header.workspace_id)
    summary.source_store = header.source_store
    async with target.write_workspace(workspace, replace=replace) as writer:
        importer = _Importer(file, writer, summary, progress)
        await importer.run()
        summary.replaced = len(writer.replaced)
        touched = sorted({*writer.replaced, *importer.panel_ids})
    summary.sha256, summary.bytes = file.hash.hexdigest(), file.bytes
    summary.seconds = time.monotonic() - started
    return summary, touched


# -- the commands ------------------------------------------------------------------------------


class StatusLine(Protocol):
    """cli.ProgressLine: one line rewritten in place on a terminal, nothing elsewhere."""

    def show(self, text: str) -> None: ...

    def clear(self) -> None: ...


OpenTransfer = Callable[[bool], Awaitable[LogTransfer]]  # True: an import may create the store
OpenCache = Callable[[], Awaitable[StateCache | None]]


def run_command(
    args: argparse.Namespace, open_transfer: OpenTransfer, open_cache: OpenCache, line: StatusLine
) -> int:
    """`crdt-state export` / `import`: 0 done; 1 refused (a bad file, a workspace that has
    panels, no such workspace: nothing written); 2 a usage error or a store that cannot be
    used. The summary goes to stdout (JSON when piped or --json), or to stderr when stdout
    carries the export (JSON with --json, text on a terminal, else nothing)."""
    name = f"crdt-state {args.command}"
    if args.command == "export" and args.output is None and sys.stdout.isatty():
        print(f"{name}: give --output FILE, or pipe the export somewhere", file=sys.stderr)
        return 2
    if args.command == "import" and args.input in (None, "-") and sys.stdin.isatty():
        print(f"{name}: give --input FILE, or pipe an export in", file=sys.stderr)
        return 2
    verb = f"{args.command}ing"

    def progress(step: Progress) -> None:
        versions = f", version {step.done:,}/{step.total:,}" if step.total else ""
        line.show(f"{verb} {step.key} (panel {step.panel:,}/{step.panels:,}{versions})")

    try:
        if args.command == "export":
            summary, stream = _export_command(args, open_transfer, progress)
        else:
            summary, stream = _import_command(args, open_transfer, open_cache, progress)
    except TransferError as exc:
        code, message = 1, str(exc)
    except (StateError, RuntimeError, OSError, ValueError) as exc:
        code, message = 2, exc.message if isinstance(exc, StateError) else str(exc)
    else:
        line.clear()
        if args.json or (stream is sys.stdout and not stream.isatty()):
            print(orjson.dumps(summary.to_json()).decode(), file=stream)
        elif stream.isatty():
            print(summary.text(), file=stream)
        return 0
    line.clear()
    print(f"{name}: {message}", file=sys.stderr)
    return code


def _export_command(
    args: argparse.Namespace, open_transfer: OpenTransfer, progress: ProgressCallback
) -> tuple[TransferSummary, TextIO]:
    check_workspace_id(args.workspace)
    if args.output in (None, "-"):
        out = sys.stdout.buffer
        summary = asyncio.run(_export(open_transfer, args.workspace, out.write, progress))
        out.flush()
        return summary, sys.stderr
    # Written aside and renamed once complete: a failed export leaves no file behind.
    partial = f"{args.output}.partial"
    try:
        with open(partial, "wb") as file:
            summary = asyncio.run(_export(open_transfer, args.workspace, file.write, progress))
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, args.output)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    summary.location = args.output
    return summary, sys.stdout


async def _export(
    open_transfer: OpenTransfer,
    workspace_id: str,
    write: Callable[[bytes], object],
    progress: ProgressCallback,
) -> TransferSummary:
    source = await open_transfer(False)
    try:
        return await export_workspace(source, workspace_id, write, progress)
    finally:
        await source.close()


def _import_command(
    args: argparse.Namespace,
    open_transfer: OpenTransfer,
    open_cache: OpenCache,
    progress: ProgressCallback,
) -> tuple[TransferSummary, TextIO]:
    if args.input in (None, "-"):
        summary = asyncio.run(_import(sys.stdin.buffer, args, open_transfer, open_cache, progress))
    else:
        with open(args.input, "rb") as file:
            summary = asyncio.run(_import(file, args, open_transfer, open_cache, progress))
        summary.location = args.input
    return summary, sys.stdout


async def _import(
    source: BinaryIO,
    args: argparse.Namespace,
    open_transfer: OpenTransfer,
    open_cache: OpenCache,
    progress: ProgressCallback,
) -> TransferSummary:
    lines: Iterator[bytes] = iter(source)
    file = ExportFile(lines)  # a file that is no export is refused before the store opens
    target = await open_transfer(True)
    try:
        summary, touched = await import_workspace(
            target, file, workspace_id=args.workspace, replace=args.replace, progress=progress
        )
    finally:
        await target.close()
    # Replicas that hold no room of these panels read the hot cache first: nothing of the
    # workspace as it was may stay there.
    cache = await open_cache()
    if cache is not None:
        try:
            for panel_id in touched:
                await cache.drop(PanelKey(summary.workspace_id, panel_id))
        finally:
            await cache.close()
    return summary
