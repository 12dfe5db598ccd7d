"""Answers checked against the OpenAPI document (crdt_state/openapi.py): the status must be one
the operation documents, and the body must match its schema (JSON Schema 2020-12; answer
objects are closed, so a field the document does not name fails).

    check_answer("GET", "/api/state/{workspace}/{panel}", 200, body)
    httpx.Client(..., event_hooks={"response": [check_response]})   # every answer a client gets
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import quote

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from crdt_state.openapi import document

SPEC = document()
URI = "urn:crdt-state:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(URI, DRAFT202012.create_resource(SPEC))
JSON = "application/json"


def _escape(token: str) -> str:
    return quote(token.replace("~", "~0").replace("/", "~1"), safe="~")


def _pointer(*tokens: str) -> str:
    return "".join("/" + _escape(token) for token in tokens)


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    """Every path template of the document as a pattern; templates with fewer parameters
    first (OpenAPI: a concrete path wins over a templated one, as the routes are listed)."""
    found = []
    for template in SPEC["paths"]:
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        found.append((template.count("{"), re.compile(pattern + r"\Z"), template))
    return [(pattern, template) for _, pattern, template in sorted(found, key=lambda f: f[0])]


def template_of(path: str) -> str:
    """The document's path template that `path` (a request's URL path) matches."""
    for pattern, template in _templates():
        if pattern.match(path):
            return template
    raise AssertionError(f"{path} matches no path of the OpenAPI document")


@functools.cache
def _validator(
    method: str, template: str, status: int, media_type: str
) -> Draft202012Validator | None:
    item = SPEC["paths"].get(template)
    assert item is not None, f"{template} is not a path of the OpenAPI document"
    operation = item.get(method.lower())
    assert operation is not None, f"{method} {template} is not in the OpenAPI document"
    responses = operation["responses"]
    assert str(status) in responses, (
        f"{method} {template} answered {status}, which the OpenAPI document does not list "
        f"(it lists {sorted(responses)})"
    )
    where = ("paths", template, method.lower(), "responses", str(status))
    answer = responses[str(status)]
    if "$ref" in answer:  # a shared answer: components/responses/<name>
        where = tuple(answer["$ref"].removeprefix("#/").split("/"))
        answer = SPEC["components"]["responses"][where[-1]]
    media = answer.get("content")
    if media is None:  # no body (a 304)
        return None
    assert media_type in media, (
        f"{method} {template} {status} answered {media_type}; the document has {sorted(media)}"
    )
    schema = {"$ref": f"{URI}#{_pointer(*where, 'content', media_type, 'schema')}"}
    return Draft202012Validator(
        schema, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def check_answer(
    method: str, path_template: str, status: int, body: Any, media_type: str = JSON
) -> None:
    """AssertionError unless the document lists `status` for the operation and `body`
    matches that answer's schema."""
    validator = _validator(method.upper(), path_template, status, media_type)
    if validator is None:
        assert body in ("", b"", None), f"{method} {path_template} {status} has no body"
        return
    error = best_match(validator.iter_errors(body))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(the body)"
        raise AssertionError(
            f"{method} {path_template} {status}: the answer does not match the OpenAPI "
            f"document at {where}: {error.message}"
        )


def check_response(answer: httpx.Response) -> None:
    """An httpx response hook: the answer checked against the document."""
    answer.read()
    request = answer.request
    media_type = answer.headers.get("content-type", "").split(";")[0].strip()
    body = answer.json() if media_type == JSON else answer.text
    path = request.url.raw_path.split(b"?", 1)[0].decode("ascii")  # ids still %-encoded
    check_answer(request.method, template_of(path), answer.status_code, body, media_type)
