"""Log lines as JSON (`CRDT_STATE_LOG_FORMAT=json`), and the ids a line carries.

One JSON object per line: `time` (ISO 8601, UTC), `level`, `logger`, `message`, and when
known `requestId` (an HTTP request), `connectionId` (a WebSocket), `workspaceId` and `panelId`,
plus `exception` (the traceback) when there is one. uvicorn's access lines add `client`,
`method`, `path`, `status`. The ids are context variables: the HTTP wrapper (app.py) binds the
request's, each socket face its connection's, a room's task its panel's; every line logged in
that context carries them, whoever logs it. Messages and tracebacks are redacted
(log_redaction.py) whatever filters the handler has. The readable text format stays the
default; it does not show the ids.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from .log_redaction import redact

T = TypeVar("T")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
connection_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "connection_id", default=None
)
workspace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "workspace_id", default=None
)
panel_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("panel_id", default=None)
FIELDS = (
    ("requestId", request_id),
    ("connectionId", connection_id),
    ("workspaceId", workspace_id),
    ("panelId", panel_id),
)
VARIABLES = {
    "request_id": request_id,
    "connection_id": connection_id,
    "workspace_id": workspace_id,
    "panel_id": panel_id,
}
# An X-Request-ID taken as it is: short, printable, nothing a log reader could trip on.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
JSON_FORMATTER = f"{__name__}.JsonFormatter"


def _reseed() -> None:
    global _prefix, _counter
    _prefix = os.urandom(10).hex()
    _counter = itertools.count()


_prefix, _counter = "", itertools.count()
_reseed()
os.register_at_fork(after_in_child=_reseed)  # a forked worker must not repeat its parent's ids


def new_id() -> str:
    """32 hex characters, unique: a random prefix per process (80 bits) and a counter (a
    uuid4 per connection and request cost a system call for randomness each time)."""
    return f"{_prefix}{next(_counter) & 0xFFFFFFFFFFFF:012x}"


def request_id_of(header: str | None) -> str:
    """The client's X-Request-ID when it is sane, else a new id."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return new_id()


Bindings = list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]]


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Bind ids (request_id, connection_id, workspace_id, panel_id) for the block."""
    bindings: Bindings = [(VARIABLES[n], VARIABLES[n].set(value)) for n, value in ids.items()]
    try:
        yield
    finally:
        unbind(bindings)


def bind_request(request: str) -> Bindings:
    """An HTTP request starts: its id, and no connection, workspace or panel until it names
    them; `unbind` undoes it (what `bound` does, without a generator per request)."""
    bindings: Bindings = [(request_id, request_id.set(request))]
    for variable in (connection_id, workspace_id, panel_id):
        if variable.get() is not None:
            bindings.append((variable, variable.set(None)))
    return bindings


def unbind(bindings: Bindings) -> None:
    for variable, token in reversed(bindings):
        variable.reset(token)


def bind_connection(workspace: str, panel: str | None = None) -> None:
    """A WebSocket starts: a new connection id, and the workspace (and panel) it is about, from
    here on. Set, never reset: the ASGI server runs each connection in a task of its own (and
    no wrapper frame is kept per idle connection)."""
    if request_id.get() is not None:
        request_id.set(None)
    connection_id.set(new_id())
    workspace_id.set(workspace)
    if panel_id.get() != panel:
        panel_id.set(panel)


def bind_panel(workspace: str | None, panel: str | None = None) -> None:
    """Name the panel (or workspace) the current request or socket is about, from here on
    in this context (a request's task: its access line too)."""
    if workspace:
        workspace_id.set(workspace)
    if panel:
        panel_id.set(panel)


def bind_path(params: Mapping[str, Any] | None) -> None:
    """bind_panel from a route's path parameters ({workspace}, {panel})."""
    if params:
        workspace, panel = params.get("workspace"), params.get("panel")
        bind_panel(
            workspace if isinstance(workspace, str) else None,
            panel if isinstance(panel, str) else None,
        )


def in_panel_context(workspace: str, panel: str, make: Callable[..., T], *args: Any) -> T:
    """`make(*args)` in a copy of the current context bound to a panel alone: the tasks it
    starts (a room's actor) log that panel, not the request or socket that loaded it."""

    def run() -> T:
        request_id.set(None)
        connection_id.set(None)
        workspace_id.set(workspace)
        panel_id.set(panel)
        return make(*args)

    return contextvars.copy_context().run(run)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name, variable in FIELDS:
            value = getattr(record, name, None) or variable.get()
            if value:
                entry[name] = value
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            entry.update(client=args[0], method=args[1], path=redact(str(args[2])))
            entry["status"] = args[4]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(entry, default=str).decode()


def use_json(logger: logging.Logger | None = None) -> None:
    """Every handler of `logger` (default: the root logger) writes JSON lines; warnings
    become log records (not free text on stderr)."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(JsonFormatter())
    logging.captureWarnings(True)


def json_log_config(config: dict[str, Any]) -> dict[str, Any]:
    """A logging dictConfig (uvicorn's, from log_redaction.uvicorn_log_config) with every
    formatter writing JSON lines."""
    config = {**config, "formatters": dict(config.get("formatters", {}))}
    for name in config["formatters"]:
        config["formatters"][name] = {"()": JSON_FORMATTER}
    return config
