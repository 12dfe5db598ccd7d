"""The OpenAPI document (crdt_state/openapi.py) cannot drift from the code: it is valid OpenAPI
3.1, it names every route of the app and nothing else, every error code and detail the server
sends, and the server serves exactly it. (The contract suite checks every answer it gets
against it: tests/openapi_check.py, tests/test_contract.py.)"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib
import pkgutil
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.routing import BaseRoute, Route, WebSocketRoute

import adapters
import crdt_state
from crdt_state.app import create_app
from crdt_state.auth import mint_token
from crdt_state.config import Settings
from crdt_state.errors import StateError
from crdt_state.faces.yjs_socket import PREFIX as YJS_PREFIX
from crdt_state.faces.yjs_socket import yjs_path
from crdt_state.hocuspocus import PATH as HOCUSPOCUS_PATH
from crdt_state.openapi import ANY_STATUS_CODES, ERROR_CODES, ERROR_DETAILS, document

from .conftest import token
from .openapi_check import check_response
from .server import SECRET, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")
SPEC = document()


def spec_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in SPEC["paths"].items()
        for method in item
        if method in METHODS
    }


def route_operations(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path template) of every HTTP route; HEAD is Starlette's, beside each GET."""
    return {
        (method, route.path)
        for route in routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }


def app_routes() -> list[BaseRoute]:
    return create_app(Settings(jwt_secret_key=SECRET)).starlette.routes


# -- the document ------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    errors = [e.message for e in OpenAPIV31SpecValidator(SPEC).iter_errors()]
    assert errors == []
    for schema in SPEC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert SPEC["info"]["title"] == "crdt-state"
    assert SPEC["info"]["version"] == crdt_state.__version__


def test_every_route_is_in_the_document_and_every_operation_is_a_route() -> None:
    routes = route_operations(app_routes())
    assert routes - spec_operations() == set(), "routes the OpenAPI document lacks"
    assert spec_operations() - routes == set(), "operations that are no route"


def test_a_route_added_without_the_document_is_caught() -> None:
    async def handler() -> None: ...

    added = [*app_routes(), Route("/api/state/{workspace}/brand-new", handler, methods=["POST"])]
    assert route_operations(added) - spec_operations() == {
        ("POST", "/api/state/{workspace}/brand-new")
    }


def test_both_websockets_are_described() -> None:
    sockets = {route.path for route in app_routes() if isinstance(route, WebSocketRoute)}
    yjs = YJS_PREFIX + "{workspace}/{panel}"  # served on ASGI, outside the router
    assert yjs_path(yjs) == ("{workspace}", "{panel}")
    assert {socket["path"] for socket in SPEC["x-websockets"]} == {*sockets, yjs, HOCUSPOCUS_PATH}


def test_operations_have_ids_roles_and_documented_errors() -> None:
    ids = []
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            ids.append(operation["operationId"])
            assert operation["x-role"] in ("none", "read", "write", "admin", "server-admin")
            assert (operation.get("security") == []) == (operation["x-role"] == "none"), path
            for status, answer in operation["responses"].items():
                if int(status) >= 400 and "$ref" not in answer:
                    assert (method, path) == ("get", "/ready"), (method, path, status)
    assert len(ids) == len(set(ids))


# -- errors: every code and every detail the server's code uses --------------------------------


def state_errors() -> set[type[StateError]]:
    """Every StateError class of the server (the client package has its own)."""
    for package in (crdt_state, adapters):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".client" not in module.name and not module.name.endswith("__main__"):
                importlib.import_module(module.name)

    def below(cls: type[StateError]) -> Iterator[type[StateError]]:
        for sub in cls.__subclasses__():
            if not sub.__module__.startswith("crdt_state.client"):
                yield sub
                yield from below(sub)

    return {StateError, *below(StateError)}


def test_every_error_code_is_documented_under_its_status() -> None:
    errors = state_errors()
    documented = {code for codes in ERROR_CODES.values() for code in codes}
    assert {cls.code for cls in errors} == documented | set(ANY_STATUS_CODES)
    for cls in errors:
        if cls.code not in ANY_STATUS_CODES:
            assert cls.code in ERROR_CODES[cls.status], (cls, cls.status)
    assert SPEC["components"]["schemas"]["Error"]["properties"]["error"]["enum"] == sorted(
        documented | set(ANY_STATUS_CODES)
    )


def server_sources() -> list[Path]:
    return [
        path
        for folder in ("crdt_state", "adapters")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "client" not in path.relative_to(ROOT).parts
    ]


def test_every_error_detail_is_documented() -> None:
    """The details an error carries are its constructor's keyword arguments, wherever the
    server builds or raises one."""
    names = {cls.__name__ for cls in state_errors()}
    used: dict[str, str] = {}
    for path in server_sources():
        tree = ast.parse(path.read_text())
        # Parameters that hold an error class (`cls: type[StateError]`) count as its name.
        held = {
            arg.arg
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for arg in node.args.args + node.args.kwonlyargs
            if arg.annotation is not None and "Error" in ast.unparse(arg.annotation)
        }
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in names or name in held:
                for keyword in call.keywords:
                    if keyword.arg is not None:
                        used.setdefault(keyword.arg, f"{path.relative_to(ROOT)}:{call.lineno}")
    assert {"field", "currentVersion", "operation", "retryAfter"} <= set(used)  # it works
    undocumented = {name: where for name, where in used.items() if name not in ERROR_DETAILS}
    assert undocumented == {}
    error = SPEC["components"]["schemas"]["Error"]
    assert error["additionalProperties"] is False
    assert set(error["properties"]) == {"error", "message", *ERROR_DETAILS}


# -- served --------------------------------------------------------------------------------------


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    hooks = {"response": [check_response]}
    with httpx.Client(base_url=server.http, timeout=30, event_hooks=hooks) as client:
        yield client


def test_the_served_document_is_the_module(http: httpx.Client) -> None:
    answer = http.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert orjson.loads(answer.content) == orjson.loads(orjson.dumps(SPEC))


def test_the_docs_page_is_self_contained(http: httpx.Client) -> None:
    answer = http.get("/api/docs")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe" not in policy
    for tag in ("script", "style"):
        [block] = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in policy
    assert not re.search(r"(src|href)=\"?(https?:)?//", page)  # nothing from elsewhere
    assert 'fetch("/openapi.json"' in page


def test_answers_outside_the_contract_suite_match_the_document(http: httpx.Client) -> None:
    """Operations, server-admin and status answers; the hook checks each one."""
    assert http.get("/health").status_code == 200
    assert http.get("/ready").status_code in (200, 503)
    assert http.get("/metrics").status_code == 200
    assert http.put("/api/state/ws/snapshot").status_code == 405
    assert http.get("/api/state/ws/restore").status_code == 405
    assert http.get("/api/state/ws/p").status_code == 401
    assert http.get("/api/state/ws%01/p").status_code == 400
    writer = {"Authorization": f"Bearer {token()}"}
    assert http.get("/api/state/other/p", headers=writer).status_code == 403
    assert http.get("/api/state/ws/snapshot/status", headers=writer).status_code == 200
    admin = {"Authorization": f"Bearer {mint_token(SECRET, 'root', {}, admin=True)}"}
    assert http.get("/api/admin/revocations", headers=writer).status_code == 403
    made = http.post("/api/admin/revocations", headers=admin, json={"subject": "mallory"})
    assert made.status_code == 201, made.text
    assert http.post("/api/admin/revocations", headers=admin, json={}).status_code == 400
    listed = http.get("/api/admin/revocations", headers=admin, params={"limit": 1})
    assert listed.status_code == 200 and listed.json()["revocations"][0]["subject"] == "mallory"


def test_ai_context_answers_match_the_document(http: httpx.Client) -> None:
    writer = {"Authorization": f"Bearer {token()}"}
    body = {"state": {"$state": {"title": "Hello", "items": list(range(50))}}}
    assert http.put("/api/state/ws/notes", headers=writer, json=body).status_code == 200
    options: list[dict[str, str | int]] = [
        {},
        {"format": "json", "recentChanges": 5},
        {"maxTokens": 50},
    ]
    for params in options:
        answer = http.get("/api/state/ws/context", headers=writer, params=params)
        assert answer.status_code == 200, answer.text
    again = http.get(
        "/api/state/ws/context",
        headers={**writer, "If-None-Match": answer.headers["etag"]},
        params={"maxTokens": 50},
    )
    assert again.status_code == 304
    assert http.post("/api/state/ws/context", headers=writer).status_code == 405
    admin = {"Authorization": f"Bearer {mint_token(SECRET, 'root', {}, admin=True)}"}
    assert http.get("/api/admin/context-cache", headers=admin).status_code == 200


def test_a_field_the_document_lacks_fails_the_check(http: httpx.Client) -> None:
    request = http.get("/health").request
    grown = httpx.Response(200, json={"status": "ok", "uptime": 1}, request=request)
    with pytest.raises(AssertionError, match="'uptime' was unexpected"):
        check_response(grown)
    unlisted = httpx.Response(404, json={"error": "not_found", "message": "?"}, request=request)
    with pytest.raises(AssertionError, match="does not list"):
        check_response(unlisted)
