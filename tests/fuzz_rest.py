"""Hypothesis strategies for the REST face of the fuzzer (tests/test_fuzz.py): JSON Patch
documents drawn against the paths a panel really has, bodies for PUT, PATCH, revert, snapshot
and restore (well-formed, wrong types, not JSON), content types, headers, query strings and
ids in paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from .fuzz_values import (
    INTERESTING_INTS,
    json_values,
    keys,
    long_arrays,
    mostly,
    plain,
    plain_objects,
    plain_values,
    scalars,
    to_body,
)

OPS = ("add", "remove", "replace", "move", "copy", "test")
# n copies of a small container into itself make 2^n values (found: 20 held the server
# ~40 s; now refused past the write limit of 100,000 values).
MAX_SELF_COPIES = 40
BAD_OPS: tuple[Any, ...] = ("", "ADD", "get", "_get", "merge", "add ", None, 1, [], {})
# Tokens that look like array indices to someone: leading zeros, signs, exponents, digits of
# other scripts (Python's str.isdigit() is true for "²", whose int() fails).
INDEX_LIKE = (
    "-",
    "0",
    "1",
    "2",
    "01",
    "-1",
    "10",
    "18446744073709551616",
    "9" * 19,
    "9" * 40,
    "1e1",
    " 0",
    "0x1",
    "²",
    "٣",
    "¹²",
    "①",
    "Ⅻ",
)
numeric_texts = st.one_of(
    st.integers(-10, 10).map(str),
    st.integers(0, 10**30).map(str),
    st.sampled_from(
        ("", "-1", "1.5", "1e3", "0x10", " 1", "1 ", "+1", "true", "null", *INDEX_LIKE[12:])
    ),
    st.sampled_from(("9223372036854775808", "18446744073709551616", "1" + "0" * 4300)),
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=4),
)
segments = st.one_of(keys, st.sampled_from(INDEX_LIKE), numeric_texts)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def panel_paths(view: Any, limit: int = 200) -> list[str]:
    """Every JSON Pointer into the view (roots included), breadth first, at most ``limit``."""
    found: list[str] = []
    queue: list[tuple[str, Any]] = [("", view)]
    while queue and len(found) < limit:
        pointer, node = queue.pop(0)
        if pointer:
            found.append(pointer)
        if isinstance(node, dict):
            queue += [(f"{pointer}/{escape(k)}", v) for k, v in node.items()]
        elif isinstance(node, list):
            queue += [(f"{pointer}/{i}", v) for i, v in enumerate(node)]
    return found


# --- JSON Patch --------------------------------------------------------------------------------


@st.composite
def pointers(draw: st.DrawFn, known: tuple[str, ...]) -> Any:
    """A JSON Pointer: one the panel has (maybe one level deeper), one built from odd tokens
    (escaped or not), any text, or not a string at all."""
    choice = draw(st.integers(0, 11))
    if known and choice < 5:
        pointer = draw(st.sampled_from(known))
        if choice >= 3:
            pointer += "/" + escape(draw(segments))
        return pointer
    if choice < 10:
        root = draw(st.sampled_from(("$state", "$state", "$computed", "$meta", "", "evil")))
        tokens = draw(st.lists(segments, max_size=4))
        escaped = draw(st.integers(0, 4)) > 0
        return "/" + "/".join([root, *(escape(t) if escaped else t for t in tokens)])
    if choice == 10:
        return draw(st.one_of(st.text(max_size=16), st.sampled_from(("", "/", "//", "~", "/~2"))))
    return draw(st.one_of(st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2)))


@st.composite
def operations(draw: st.DrawFn, known: tuple[str, ...]) -> Any:
    """One JSON Patch operation, mostly well-formed, sometimes missing or with odd members."""
    if not draw(st.integers(0, 29)):
        return draw(json_values(max_leaves=3))  # not an object at all
    name = draw(mostly(st.sampled_from(OPS), st.sampled_from(BAD_OPS), 6))
    op: dict[str, Any] = {}
    if draw(st.integers(0, 19)):
        op["op"] = name
    if draw(st.integers(0, 19)):
        op["path"] = draw(pointers(known))
    if name in ("move", "copy") or not draw(st.integers(0, 9)):
        op["from"] = draw(pointers(known))
    if name in ("add", "replace", "test") or not draw(st.integers(0, 9)):
        op["value"] = draw(mostly(plain_values(), json_values(max_leaves=12), 3))
    if not draw(st.integers(0, 9)):
        op[draw(keys)] = draw(scalars)
    return op


@st.composite
def patch_documents(draw: st.DrawFn, known: tuple[str, ...]) -> Any:
    """A JSON Patch: a few operations; one repeated (copy amplification, long patches); or not
    an array."""
    shape = draw(st.integers(0, 10))
    if shape == 10:  # a long array written at a known path
        return [{"op": "add", "path": draw(pointers(known)), "value": draw(long_arrays)}]
    if shape <= 6:
        return draw(st.lists(operations(known), max_size=8))
    if shape == 7:
        op = draw(operations(known))
        repeats = draw(st.one_of(st.integers(2, 64), st.sampled_from((1000, 1001))))
        if _copies_into_itself(op):
            repeats = min(repeats, MAX_SELF_COPIES)
        return [op] * repeats
    if shape == 8:  # a copy bomb: a value copied into itself, doubling it again and again
        source = draw(pointers(known))
        if draw(st.booleans()):  # grown by a large string: refused by what it writes
            return [
                {"op": "add", "path": f"{source}/s", "value": "x" * 1000},
                *(
                    {"op": "copy", "from": source, "path": f"{source}/c{n}"}
                    for n in range(draw(st.integers(1, 40)))
                ),
            ]
        return [
            {"op": "copy", "from": source, "path": f"{source}/c{n}"}
            for n in range(draw(st.integers(1, MAX_SELF_COPIES)))
        ]
    return draw(json_values(max_leaves=4))


def _copies_into_itself(op: Any) -> bool:
    """A copy (or move) of a container into itself: repeated, it doubles it."""
    if not isinstance(op, dict) or op.get("op") not in ("copy", "move"):
        return False
    source, target = op.get("from"), op.get("path")
    return isinstance(source, str) and isinstance(target, str) and target.startswith(source)


def versions(current: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(current),
        st.integers(0, current + 2),
        st.sampled_from(INTERESTING_INTS),
        st.none(),
        st.floats(),
        st.text(max_size=4),
        st.booleans(),
    )


# --- requests ----------------------------------------------------------------------------------

CONTENT_TYPES: tuple[str | None, ...] = (
    "application/json",
    "application/json",
    "application/json",
    None,
    "application/json; charset=utf-8",
    "application/json-patch+json",
    "application/merge-patch+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
    "application/json; charset=latin-1",
    "APPLICATION/JSON",
)
ROLES = ("writer", "writer", "writer", "writer", "admin", "reader", "none", "garbage", "other")


@dataclass
class Request:
    """One REST request as the fuzzer sends it. ``path`` is percent-encoded already."""

    method: str
    path: str
    query: str = ""
    body: bytes | None = None
    content_type: str | None = "application/json"
    headers: dict[str, bytes] = field(default_factory=dict)
    role: str = "writer"

    def describe(self) -> str:
        body = self.body if self.body is None or len(self.body) < 400 else self.body[:400] + b"..."
        query = f"?{self.query}" if self.query else ""
        return (
            f"{self.method} {self.path}{query} as {self.role}, "
            f"content-type {self.content_type!r}, headers {self.headers!r}, body {body!r}"
        )


def encode_id(value: str) -> str:
    """An id as one path segment: every byte escaped but letters and digits, and dots too
    when the id is only dots (clients normalize the segments . and ..)."""
    encoded = quote(value.encode("utf-8", "surrogatepass"), safe="")
    return encoded.replace(".", "%2E") if set(value) <= {"."} else encoded


ODD_IDS = (
    ".",
    "..",
    "...",
    " ",
    "\t",
    "a\x00b",
    "a\x7fb",
    "\u202e",
    "\u2066x",
    "snapshot",
    "restore",
    "x" * 200,
    "x" * 201,
    "a:b",
    "%41",
    "%",
    "a/b",
    "a\\b",
    "\ud800",
    "über",
    "\U0001f642",
    "\ufeff",
    "history",
    "revert",
)
# Segments written as they are: escapes that are not UTF-8, incomplete, or not escapes.
RAW_SEGMENTS = ("%FF%FE", "%C3", "%ED%A0%80", "%zz", "%2", "%00", "%2F", "%252E%252E")


@st.composite
def odd_segments(draw: st.DrawFn) -> tuple[str, str | None]:
    """(segment as sent, the id it decodes to, None when it does not decode)."""
    if not draw(st.integers(0, 5)):
        return draw(st.sampled_from(RAW_SEGMENTS)), None
    value = draw(st.one_of(st.sampled_from(ODD_IDS), st.text(max_size=12)))
    return encode_id(value), value


def body_bytes(value: Any) -> st.SearchStrategy[bytes]:
    """``value`` as JSON text (ASCII or not), or now and then mangled: cut short, behind a
    BOM, padded, empty, or replaced by random bytes."""
    return mostly(
        st.one_of(st.just(to_body(value)), st.just(to_body(value, ascii_only=False))),
        mangled_bytes(value),
    )


def mangled_bytes(value: Any) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.integers(0, 40).map(lambda n: to_body(value)[:n]),
        st.just(b"\xef\xbb\xbf" + to_body(value)),
        st.just(b" \n\t" * 100 + to_body(value)),
        st.just(b""),
        st.binary(max_size=24),
    )


def with_members(base: dict[str, Any], members: dict[str, st.SearchStrategy[Any]]) -> Any:
    """``base`` plus any of ``members`` (each drawn), plus maybe an unknown member."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body = dict(base)
        for name, strategy in members.items():
            if draw(st.booleans()):
                body[name] = draw(strategy)
        if not draw(st.integers(0, 5)):
            body[draw(keys)] = draw(scalars)
        return body

    return build()


attribution_members: dict[str, st.SearchStrategy[Any]] = {
    "triggeredBy": mostly(
        st.sampled_from(("user", "ai", "system")),
        st.one_of(st.sampled_from(("USER", "")), scalars),
        4,
    ),
    "triggerSource": mostly(st.text(max_size=12), scalars, 4),
}


def state_values() -> st.SearchStrategy[Any]:
    """What a PUT's ``state`` may be: the two roots with objects (plain or hostile), one of
    them, $meta, another root, or any value."""
    roots = st.one_of(
        plain_objects,
        plain_objects,
        json_values(max_leaves=15),
        st.builds(lambda value: {"long": value}, long_arrays),
    )
    return st.one_of(
        st.fixed_dictionaries({"$state": roots}),
        st.fixed_dictionaries({"$state": roots, "$computed": roots}),
        st.fixed_dictionaries({"$computed": roots}),
        st.fixed_dictionaries({"$meta": roots}),
        st.dictionaries(keys, roots, max_size=3),
        json_values(max_leaves=6),
    )


def put_bodies(current: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        with_members({}, {"state": state_values(), "version": versions(current)}).map(
            lambda body: body if "state" in body else {**body, "state": {"$state": {}}}
        ),
        with_members({}, {"state": state_values(), "version": versions(current)}),
        with_members({}, {"state": state_values(), **attribution_members}),
        json_values(max_leaves=8),
    )


def patch_bodies(current: int, known: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return mostly(
        with_members(
            {"patches": []},
            {
                "patches": patch_documents(known),
                "version": mostly(st.just(current), versions(current), 3),
                **attribution_members,
            },
        ),
        odd_patch_bodies(current, known),
        3,
    )


def odd_patch_bodies(current: int, known: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(
        with_members(
            {},
            {
                "patches": patch_documents(known),
                "version": versions(current),
                "strict": st.one_of(st.booleans(), scalars),
                "snapshotBefore": st.one_of(st.just(False), scalars),
                **attribution_members,
            },
        ),
        patch_documents(known),
        json_values(max_leaves=8),
    )


def revert_bodies(current: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        with_members(
            {"targetVersion": 1},
            {
                "targetVersion": versions(current),
                "createSnapshot": st.one_of(st.just(False), scalars),
                **attribution_members,
            },
        ),
        json_values(max_leaves=6),
    )


snapshot_bodies = st.one_of(
    with_members(
        {},
        {
            "type": st.one_of(st.sampled_from(("manual", "auto", "")), scalars),
            "description": st.one_of(st.text(max_size=40), scalars),
            "commitToGit": st.one_of(st.booleans(), scalars),
        },
    ),
    json_values(max_leaves=6),
)
restore_bodies = st.one_of(
    with_members(
        {"gitCommit": "0" * 40},
        {
            "gitCommit": st.one_of(
                st.text("0123456789abcdefABCDEF", min_size=0, max_size=42), scalars
            ),
            "panels": st.one_of(st.lists(st.text(max_size=8), max_size=3), scalars),
            **attribution_members,
        },
    ),
    json_values(max_leaves=6),
)

QUERY_NAMES = (
    "version",
    "include_history",
    "includeHistory",
    "limit",
    "offset",
    "since",
    "until",
    "dryRun",
    "dry_run",
    "git_commit",
    "gitCommit",
    "epoch",
)
TIMES = (
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00",
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59+00:00",
    "2024-13-45T99:99:99Z",
    "yesterday",
    "",
    "2024-01-01T00:00:00+25:00",
)


@st.composite
def query_strings(draw: st.DrawFn, names: tuple[str, ...] = QUERY_NAMES) -> str:
    """A query string: parameters (mostly ``names``, those the endpoint reads) with numbers
    (of every script), times, flags, hex or any text; a name may come twice."""
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(
            mostly(
                st.sampled_from(names), st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=6))
            )
        )
        value = draw(
            st.one_of(
                numeric_texts,
                numeric_texts,
                st.sampled_from(TIMES),
                st.sampled_from(("true", "1", "yes", "false", "")),
                st.text("0123456789abcdef", max_size=41),
                st.text(max_size=10),
            )
        )
        parts.append(
            quote(name.encode("utf-8", "surrogatepass"), safe="")
            + "="
            + quote(value.encode("utf-8", "surrogatepass"), safe="")
        )
    return "&".join(parts)


def header_safe(raw: bytes) -> bytes:
    """Only what HTTP lets a header value hold (tab, visible ASCII, obs-text)."""
    return bytes(c for c in raw if c == 9 or 0x20 <= c <= 0x7E or c >= 0x80).strip(b" \t")


if_match_values = st.one_of(
    st.integers(0, 10).map(lambda n: f'"{n}"'.encode()),
    st.sampled_from((b"*", b'W/"1"', b'"-1"', b'""', b"1", b'"99999999999999999999999"')),
    # Header bytes are read as Latin-1: "\xb2" is "²" to the server.
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3).flatmap(
        lambda digits: st.sampled_from(
            (f'"{digits}"'.encode(), f'"{digits}"'.encode("latin-1", "ignore"))
        )
    ),
    st.binary(max_size=8).map(header_safe),
)


@st.composite
def extra_headers(draw: st.DrawFn) -> dict[str, bytes]:
    headers: dict[str, bytes] = {}
    if not draw(st.integers(0, 5)):
        headers["If-Match"] = draw(if_match_values)
    if not draw(st.integers(0, 5)):
        key = draw(st.text(max_size=12).filter(plain))
        headers["Idempotency-Key"] = header_safe(key.encode("utf-8"))
    if not draw(st.integers(0, 9)):
        headers["X-Trigger-Source"] = header_safe(draw(st.binary(max_size=8)))
    return headers


__all__ = [
    "CONTENT_TYPES",
    "ROLES",
    "Request",
    "body_bytes",
    "encode_id",
    "extra_headers",
    "odd_segments",
    "panel_paths",
    "patch_bodies",
    "patch_documents",
    "put_bodies",
    "query_strings",
    "restore_bodies",
    "revert_bodies",
    "snapshot_bodies",
]
