"""The API's own description, no token needed:

GET /openapi.json   the OpenAPI 3.1 document (crdt_state/openapi.py), rendered once
GET /api/docs       a small page that renders it: self-contained (its script and style
                    are inline, it fetches only /openapi.json), under a strict
                    Content-Security-Policy that allows exactly those two inline blocks
"""

from __future__ import annotations

import base64
import functools
import hashlib

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..openapi import document


def api_docs_routes() -> list[Route]:
    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/api/docs", api_docs, methods=["GET"]),
    ]


@functools.cache
def _spec_bytes() -> bytes:
    return orjson.dumps(document())


async def openapi_json(request: Request) -> Response:
    return Response(
        _spec_bytes(),
        media_type="application/json",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def api_docs(request: Request) -> Response:
    return Response(PAGE, media_type="text/html", headers=PAGE_HEADERS)


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 62rem; padding: 1rem;
       color: #1b1f24; background: #fff; }
h1 { margin-bottom: 0.2rem; } h3 { margin: 0 0 0.4rem; font-size: 1.05rem; }
pre, code { font: 13px/1.4 ui-monospace, monospace; }
pre { background: #f5f7f9; padding: 0.6rem; overflow-x: auto; white-space: pre-wrap; }
section { border-top: 1px solid #d8dee4; padding: 0.8rem 0; }
table { border-collapse: collapse; margin: 0.3rem 0 0.6rem; }
td, th { border: 1px solid #d8dee4; padding: 0.2rem 0.5rem; text-align: left;
         vertical-align: top; }
.method { display: inline-block; min-width: 4.2rem; font-weight: 700; }
.muted { color: #57606a; } .toc { columns: 2; padding-left: 1.2rem; }
"""

SCRIPT = """
"use strict";
const root = document.getElementById("doc");
const METHODS = ["get", "put", "post", "patch", "delete"];

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function link(text, target) {
  const a = el("a", "", text);
  a.href = "#" + target;
  return a;
}
function lookup(spec, obj) {
  for (let hops = 0; obj && typeof obj.$ref === "string" && hops < 10; hops++) {
    obj = obj.$ref.slice(2).split("/")
      .map((k) => k.replace(/~1/g, "/").replace(/~0/g, "~"))
      .reduce((o, k) => (o ? o[k] : undefined), spec);
  }
  return obj || {};
}
function schemaText(schema) {
  if (schema && typeof schema.$ref === "string") {
    const name = schema.$ref.split("/").pop();
    return link(name, "schema-" + name);
  }
  return el("code", "", JSON.stringify(schema));
}
function table(headers, rows) {
  const t = el("table");
  const head = el("tr");
  headers.forEach((h) => head.append(el("th", "", h)));
  t.append(head);
  rows.forEach((cells) => {
    const tr = el("tr");
    cells.forEach((c) => {
      const td = el("td");
      td.append(c instanceof Node ? c : document.createTextNode(String(c)));
      tr.append(td);
    });
    t.append(tr);
  });
  return t;
}
function operation(spec, path, method, item, op) {
  const section = el("section");
  section.id = "op-" + op.operationId;
  const title = el("h3");
  title.append(el("span", "method", method.toUpperCase()), el("code", "", path));
  section.append(title, el("div", "", op.summary), el("div", "muted", op.description));
  const params = (item.parameters || []).concat(op.parameters || []).map((p) => lookup(spec, p));
  if (params.length) {
    section.append(table(["parameter", "in", "schema", ""], params.map((p) => [
      p.name + (p.required ? " *" : ""), p.in, schemaText(p.schema || {}), p.description || "",
    ])));
  }
  if (op.requestBody) {
    const body = lookup(spec, op.requestBody);
    section.append(table(["request body", "schema"], Object.entries(body.content || {})
      .map(([media, c]) => [media + (body.required ? " *" : ""), schemaText(c.schema || {})])));
  }
  const answers = Object.entries(op.responses || {}).map(([status, r]) => {
    const answer = lookup(spec, r);
    const media = Object.entries(answer.content || {});
    const cell = el("span");
    media.forEach(([type, c], i) => {
      if (i) cell.append(", ");
      cell.append(type + " ", schemaText(c.schema || {}));
    });
    return [status, answer.description || "", cell];
  });
  section.append(table(["status", "answer", "body"], answers));
  return section;
}
function render(spec) {
  const info = spec.info || {};
  document.title = info.title + " " + info.version + " API";
  root.textContent = "";
  root.append(el("h1", "", document.title), el("pre", "", info.description));
  const toc = el("ul", "toc");
  const ops = el("div");
  Object.entries(spec.paths || {}).forEach(([path, item]) => METHODS.forEach((method) => {
    const op = item[method];
    if (!op) return;
    const li = el("li");
    li.append(link(method.toUpperCase() + " " + path, "op-" + op.operationId));
    toc.append(li);
    ops.append(operation(spec, path, method, item, op));
  }));
  root.append(el("h2", "", "Operations"), toc, ops);
  const sockets = JSON.stringify(spec["x-websockets"], null, 2);
  root.append(el("h2", "", "WebSockets"), el("pre", "", sockets));
  root.append(el("h2", "", "Schemas"));
  Object.entries((spec.components || {}).schemas || {}).forEach(([name, schema]) => {
    const section = el("section");
    section.id = "schema-" + name;
    section.append(el("h3", "", name), el("pre", "", JSON.stringify(schema, null, 2)));
    root.append(section);
  });
}
fetch("/openapi.json", { headers: { Accept: "application/json" } })
  .then((r) => { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
  .then(render)
  .catch((e) => { root.textContent = "Could not load /openapi.json: " + e.message; });
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = (
    "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
    '<meta name=viewport content="width=device-width, initial-scale=1">'
    f"<title>crdt-state API</title><style>{STYLE}</style></head>"
    '<body><main id=doc>Loading <a href="/openapi.json">/openapi.json</a>…</main>'
    f"<script>{SCRIPT}</script></body></html>\n"
)
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
        "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
