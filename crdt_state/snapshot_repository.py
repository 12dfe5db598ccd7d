"""Git snapshots of a workspace: the records of the repository port (ports.SnapshotRepository),
the file layout and the commit-message format.

Each workspace is one Git repository; each panel is one file `panels/{name}.json` holding the
panel's JSON view in a canonical form, so a diff between two commits shows only real changes.
No Git library is imported here: `adapters/git.py` implements `SnapshotRepository`.
See docs/GIT.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import orjson

from .errors import BadRequest, InvalidValue, StateError, Unavailable

PANELS_DIR = "panels"
PANEL_SUFFIX = ".json"
PANEL_VERSION_TRAILER = "Panel-Version"
MAX_WORKSPACE_NAME = 200  # encoded; leaves room for ".git" under the usual 255-byte limit
CHANGED_LISTED = 20  # panel ids named in a message body; the rest are counted

_SHA = re.compile(r"[0-9a-fA-F]{4,40}")
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_TRAILER_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*): (.*)")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_DOT = ord(".")


# --- errors -------------------------------------------------------------------------------


class MalformedSha(BadRequest):
    """Not a commit id at all: 4 to 40 hexadecimal digits are expected."""

    code = "malformed_sha"


class AmbiguousSha(BadRequest):
    code = "ambiguous_sha"


class InvalidName(BadRequest):
    """A workspace or panel name that cannot be stored (empty, path traversal...)."""

    code = "invalid_name"


class CommitNotFound(StateError):
    """No such commit in this workspace's repository.

    A commit of another workspace is reported the same way: repositories are separate, and
    probing the others would tell a caller about workspaces it may not be allowed to see.
    """

    code = "commit_not_found"
    status = 404


class RepositoryCorrupt(StateError):
    """The repository is damaged (missing object, garbled ref); an operator must look."""

    code = "repository_corrupt"
    status = 500


class RepositoryBusy(Unavailable):
    """The branch kept moving (or stayed locked) under us; the caller may retry later."""

    code = "repository_busy"


class GitCommandFailed(StateError):
    code = "git_failed"
    status = 500


# --- values -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitResult:
    sha: str
    created: bool  # False: the state equals the head's, `sha` is the existing head
    changed_panels: list[str]  # added, modified or removed panel ids, sorted


@dataclass(slots=True)
class WorkspaceSnapshot:
    sha: str | None  # None: the workspace has no snapshot yet
    panels: dict[str, bytes]  # panel id -> canonical JSON bytes
    committed_at: datetime | None
    message: str | None


@dataclass(frozen=True, slots=True)
class CommitInfo:
    sha: str
    parents: list[str]
    author: str
    committed_at: datetime
    message: str

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    @property
    def panel_versions(self) -> dict[str, int]:
        return panel_versions(self.message)


Trailers = Mapping[str, str] | Sequence[tuple[str, str]]


# --- canonical JSON -----------------------------------------------------------------------


def canonical_json(view: Any) -> bytes:
    """The one byte form of a JSON view: sorted keys, two-space indent, newline at the end,
    non-ASCII kept as UTF-8. Equal views give equal bytes, so equal blobs in Git.

    Views are checked by crdt_state.values before they reach a document, so non-finite
    numbers never get here (orjson would write them as null)."""
    try:
        return orjson.dumps(
            view, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
        )
    except orjson.JSONEncodeError as exc:
        raise InvalidValue(f"The view cannot be written as JSON: {exc}.") from exc


# --- names --------------------------------------------------------------------------------


def encode_name(name: str) -> str:
    """A file-name-safe, reversible form of a panel or workspace name.

    Every UTF-8 byte outside [A-Za-z0-9._-] becomes %XX (upper-case hex), and so does a
    leading dot: "." / ".." / ".git" can never appear as a path component. Names that are
    already safe stay as they are, so ordinary ids read naturally in `git log`."""
    if _SAFE_NAME.fullmatch(name):
        return name  # the usual case, and the hot one: every panel of every snapshot
    if not name:
        raise InvalidName("A name must not be empty.")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidName(f"The name {name!r} is not valid Unicode text.") from exc
    return "".join(
        chr(byte) if byte in _SAFE_BYTES and not (index == 0 and byte == _DOT) else f"%{byte:02X}"
        for index, byte in enumerate(raw)
    )


def decode_name(encoded: str) -> str:
    """The inverse of encode_name; ValueError for anything encode_name cannot have written
    (so one name has exactly one file name)."""
    try:
        name = unquote(encoded, errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{encoded!r} does not decode to UTF-8 text") from exc
    if not name or encode_name(name) != encoded:
        raise ValueError(f"{encoded!r} is not an encoded name")
    return name


def panel_file_name(panel_id: str) -> str:
    """The name of the panel's file inside `panels/`."""
    return encode_name(panel_id) + PANEL_SUFFIX


def panel_id_from_file_name(file_name: str) -> str:
    """The panel id a file of `panels/` holds; ValueError if it is not one of ours."""
    if not file_name.endswith(PANEL_SUFFIX):
        raise ValueError(f"{file_name!r} is not a panel file")
    return decode_name(file_name[: -len(PANEL_SUFFIX)])


def workspace_dir_name(workspace: str) -> str:
    """The folder of the workspace's bare repository under the root, `{encoded}.git`.

    Path-like names are refused outright rather than encoded: a caller sending "../x" or
    "/etc" is either confused or probing, and should hear about it."""
    if not workspace or workspace in (".", "..") or any(c in workspace for c in "/\\\0"):
        raise InvalidName(
            f"The workspace name {workspace!r} is not allowed: it must be non-empty, "
            "not '.' or '..', and contain no '/', '\\' or NUL.",
        )
    encoded = encode_name(workspace)
    if len(encoded) > MAX_WORKSPACE_NAME:
        raise InvalidName(f"The workspace name is too long ({len(encoded)} encoded bytes).")
    return encoded + ".git"


def check_sha(sha: str) -> str:
    """The commit id in lower case; MalformedSha unless it is 4 to 40 hex digits."""
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise MalformedSha(
            f"{sha!r} is not a commit id: 4 to 40 hexadecimal digits are expected.", sha=str(sha)
        )
    return sha.lower()


# --- messages and trailers ----------------------------------------------------------------


def snapshot_message(
    snapshot_type: str,
    description: str | None,
    panel_versions: Mapping[str, int],
    changed: Sequence[str],
) -> tuple[str, list[tuple[str, str]]]:
    """(message, trailers) for commit(): a subject saying what changed, the description,
    the changed panel ids, and one `Panel-Version: {id}@{version}` trailer per panel, so a
    commit maps back to positions in each panel's log."""
    if not snapshot_type or "\n" in snapshot_type or "\r" in snapshot_type:
        raise BadRequest(f"The snapshot type {snapshot_type!r} must be one non-empty line.")
    count = len(changed)
    subject = f"snapshot ({snapshot_type}): {count} panel{'' if count == 1 else 's'} changed"
    paragraphs = [subject]
    if description and description.strip():
        paragraphs.append(description.strip())
    if changed:
        paragraphs.append("Changed: " + _listing(sorted(changed)))
    return "\n\n".join(paragraphs), panel_version_trailers(panel_versions)


def _listing(panel_ids: list[str]) -> str:
    names = ", ".join(encode_name(p) for p in panel_ids[:CHANGED_LISTED])
    more = len(panel_ids) - CHANGED_LISTED
    return f"{names} and {more} more" if more > 0 else names


def panel_version_trailers(panel_versions: Mapping[str, int]) -> list[tuple[str, str]]:
    # Ids are encoded so that a trailer value never holds a newline, and '@' (encoded as %40)
    # can only be the separator before the version.
    return [
        (PANEL_VERSION_TRAILER, f"{encode_name(panel_id)}@{int(version)}")
        for panel_id, version in sorted(panel_versions.items())
    ]


def format_commit_message(message: str, trailers: Trailers) -> str:
    """The full commit message: `message`, a blank line, then one `Key: value` per trailer
    (the block `git interpret-trailers --parse` reads back)."""
    body = message.strip("\n")
    if not body.strip():
        raise BadRequest("A snapshot needs a commit message.")
    pairs = list(trailers.items()) if isinstance(trailers, Mapping) else list(trailers)
    if not pairs:
        return body + "\n"
    for key in {key for key, _ in pairs}:  # a thousand trailers share one or two keys
        if not _TRAILER_KEY.fullmatch(key):
            raise BadRequest(f"The trailer key {key!r} must be letters, digits and '-'.")
    block = "\n".join(f"{key}: {value}" for key, value in pairs)
    if block.count("\n") != len(pairs) - 1 or "\r" in block:
        raise BadRequest("Every trailer value must be one line.")
    return f"{body}\n\n{block}\n"


def parse_trailers(message: str) -> list[tuple[str, str]]:
    """The trailers of a commit message: its last paragraph, if every line is `Key: value`."""
    paragraphs = message.strip("\n").split("\n\n")
    if len(paragraphs) < 2:
        return []  # a subject alone is never a trailer block
    pairs = []
    for line in paragraphs[-1].split("\n"):
        match = _TRAILER_LINE.fullmatch(line)
        if match is None:
            return []
        pairs.append((match.group(1), match.group(2)))
    return pairs


def panel_versions(message: str) -> dict[str, int]:
    """Panel id -> version, from the `Panel-Version` trailers of a commit message."""
    versions: dict[str, int] = {}
    for key, value in parse_trailers(message):
        if key.lower() != PANEL_VERSION_TRAILER.lower():
            continue
        encoded, _, version = value.rpartition("@")
        try:
            versions[decode_name(encoded)] = int(version)
        except ValueError:
            continue  # not written by snapshot_message; nothing to map back to
    return versions
