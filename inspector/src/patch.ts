// JSON Pointer (RFC 6901) and JSON Patch (RFC 6902): applying the patches of the live feed, and
// describing a version's patch as a readable diff (the value before each change, when the
// state before the version is known).

import type { PatchOp } from "./api";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export function parsePointer(pointer: string): string[] {
  if (pointer === "") return [];
  if (!pointer.startsWith("/")) throw new Error(`Not a JSON Pointer: ${pointer}`);
  return pointer
    .slice(1)
    .split("/")
    .map((token) => token.replace(/~1/g, "/").replace(/~0/g, "~"));
}

export function formatPointer(tokens: readonly string[]): string {
  return tokens.map((token) => "/" + token.replace(/~/g, "~0").replace(/\//g, "~1")).join("");
}

function isObject(value: unknown): value is { [key: string]: Json } {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function index(array: Json[], token: string, adding: boolean): number {
  if (token === "-" && adding) return array.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new Error(`Bad array index ${token}`);
  const at = Number(token);
  if (at > array.length || (!adding && at === array.length)) throw new Error(`Index ${at} out of range`);
  return at;
}

/** The value at `pointer`, or undefined when there is none. */
export function lookup(doc: unknown, pointer: string): Json | undefined {
  let node: unknown = doc;
  for (const token of parsePointer(pointer)) {
    if (Array.isArray(node)) {
      if (!/^(0|[1-9][0-9]*)$/.test(token)) return undefined;
      node = node[Number(token)];
    } else if (isObject(node)) {
      if (!Object.prototype.hasOwnProperty.call(node, token)) return undefined;
      node = node[token];
    } else {
      return undefined;
    }
    if (node === undefined) return undefined;
  }
  return node as Json;
}

function parentOf(doc: Json, tokens: string[]): Json {
  let node: Json = doc;
  for (const token of tokens.slice(0, -1)) {
    const next: Json | undefined = Array.isArray(node)
      ? node[index(node, token, false)]
      : isObject(node)
        ? node[token]
        : undefined;
    if (next === undefined) throw new Error(`No such path: ${formatPointer(tokens)}`);
    node = next;
  }
  return node;
}

function remove(doc: Json, tokens: string[]): Json {
  const parent = parentOf(doc, tokens);
  const last = tokens[tokens.length - 1]!;
  if (Array.isArray(parent)) return parent.splice(index(parent, last, false), 1)[0]!;
  if (isObject(parent) && Object.prototype.hasOwnProperty.call(parent, last)) {
    const old = parent[last]!;
    delete parent[last];
    return old;
  }
  throw new Error(`No such path: ${formatPointer(tokens)}`);
}

function add(doc: Json, tokens: string[], value: Json, replace: boolean): Json {
  if (tokens.length === 0) return value;
  const parent = parentOf(doc, tokens);
  const last = tokens[tokens.length - 1]!;
  if (Array.isArray(parent)) {
    const at = index(parent, last, !replace);
    if (replace) parent[at] = value;
    else parent.splice(at, 0, value);
  } else if (isObject(parent)) {
    parent[last] = value;
  } else {
    throw new Error(`No container at ${formatPointer(tokens.slice(0, -1))}`);
  }
  return doc;
}

function clone<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/** `doc` with `op` applied, in place (the root may be replaced: use the result). */
export function applyOp(doc: Json, op: PatchOp): Json {
  const tokens = parsePointer(op.path);
  switch (op.op) {
    case "add":
      return add(doc, tokens, clone(op.value as Json), false);
    case "replace":
      if (tokens.length && lookup(doc, op.path) === undefined) throw new Error(`No such path: ${op.path}`);
      return add(doc, tokens, clone(op.value as Json), true);
    case "remove":
      remove(doc, tokens);
      return doc;
    case "move": {
      const from = parsePointer(op.from ?? "");
      const value = remove(doc, from);
      return add(doc, tokens, value, false);
    }
    case "copy": {
      const value = lookup(doc, op.from ?? "");
      if (value === undefined) throw new Error(`No such path: ${op.from}`);
      return add(doc, tokens, clone(value), false);
    }
    case "test":
      return doc;
  }
}

/** A copy of `doc` with the patch applied. */
export function applyPatch<T>(doc: T, patch: readonly PatchOp[]): T {
  let out = clone(doc) as Json;
  for (const op of patch) out = applyOp(out, op);
  return out as T;
}

export interface DiffLine {
  op: PatchOp["op"];
  path: string;
  from?: string;
  before?: Json; // the value the operation changed or removed, when known
  after?: Json;
  known: boolean; // `before` was looked up in the state before the version
}

/** The patch as lines of a diff; with `before` (the state before the version), each line
 * knows the value it replaced or removed. */
export function describe(patch: readonly PatchOp[], before?: unknown): DiffLine[] {
  let doc: Json | undefined = before === undefined ? undefined : clone(before as Json);
  return patch.map((op) => {
    const line: DiffLine = { op: op.op, path: op.path, known: doc !== undefined };
    if (op.from !== undefined) line.from = op.from;
    if (op.op === "add" || op.op === "replace" || op.op === "test") line.after = op.value as Json;
    if (doc !== undefined) {
      const target = op.op === "move" ? op.from ?? "" : op.path;
      const old = lookup(doc, target);
      if (old !== undefined && op.op !== "copy") line.before = clone(old);
      if (op.op === "move" || op.op === "copy") {
        const moved = lookup(doc, op.from ?? "");
        if (moved !== undefined) line.after = clone(moved);
      }
      try {
        doc = applyOp(doc, op);
      } catch {
        doc = undefined; // the rest cannot be looked up
      }
    }
    return line;
  });
}

/** The paths a patch changed: where the tree should flash. */
export function changedPaths(patch: readonly PatchOp[]): string[] {
  const paths = new Set<string>();
  for (const op of patch) {
    if (op.op === "test") continue;
    paths.add(op.path.endsWith("/-") ? op.path.slice(0, -2) : op.path);
    if (op.op === "move" && op.from) paths.add(op.from);
  }
  return [...paths];
}
