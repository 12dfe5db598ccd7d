"""No token reaches a log line.

uvicorn logs the request line with its query string (the access log) and every WebSocket
handshake with its path and query (on "uvicorn.error"), and a WebSocket client sends its token
as `?token=<jwt>`. `RedactTokens` is a logging filter, set on every handler (ours and uvicorn's,
in each worker) by `crdt-state serve`: the value of any query parameter named `token` (or
`access_token`, `id_token`, `jwt`; in any case, percent-encoded or not) and anything shaped like
a JWT become `[redacted]` before a record is written.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import unquote

REDACTED = "[redacted]"
TOKEN_PARAMETERS = frozenset({"token", "access_token", "id_token", "jwt"})
_PARAMETER = re.compile(r"(?P<name>[^?&=\s\"']+)=(?P<value>[^&\s\"']*)")
# A JWS in compact form: base64url of a JSON object ("{" -> "ey"), two dots.
_JWT = re.compile(r"ey[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_HINTS = ("=", "ey")


def _parameter(match: re.Match[str]) -> str:
    if unquote(match["name"]).strip().lower() in TOKEN_PARAMETERS:
        return f"{match['name']}={REDACTED}"
    return match[0]


def redact(text: str) -> str:
    """`text` with token values replaced."""
    if not any(hint in text for hint in _HINTS):
        return text
    return _JWT.sub(REDACTED, _PARAMETER.sub(_parameter, text))


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            # Kept a tuple of the same length: uvicorn's access formatter unpacks it.
            record.args = tuple(_redacted(value) for value in args)
        elif isinstance(args, dict):
            record.args = {name: _redacted(value) for name, value in args.items()}
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of `logger` (default: the root logger)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(RedactTokens())


def uvicorn_log_config(base: dict[str, Any], level: str, app_format: str) -> dict[str, Any]:
    """uvicorn's logging configuration with the filter on each of its handlers, and the root
    logger (the server's own records) written through a filtered handler too: a dictConfig, so
    that every worker process of `--workers N` builds the same."""
    config = copy.deepcopy(base)
    config.setdefault("filters", {})["redact_tokens"] = {"()": f"{__name__}.RedactTokens"}
    config.setdefault("formatters", {})["crdt_state"] = {"format": app_format}
    config.setdefault("handlers", {})["crdt_state"] = {
        "class": "logging.StreamHandler",
        "formatter": "crdt_state",
        "stream": "ext://sys.stderr",
    }
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact_tokens"]
    config["root"] = {"handlers": ["crdt_state"], "level": level.upper()}
    return config
