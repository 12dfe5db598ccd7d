// A panel's JSON as a collapsible tree. Every node carries its JSON Pointer (data-path);
// containers are <details> (collapsible without script), their children rendered when first
// opened. What the user opened or closed stays so across updates; the paths a change touched
// flash.

import { button, h } from "./dom";
import { formatPointer, parsePointer } from "./patch";

const OPEN_DEPTH = 3; // containers this shallow start open
const PAGE = 200; // children of a container shown at first (more on demand)
const MAX_STRING = 400; // characters of a string shown (all of it in the tooltip)
const FLASH_MS = 2500;

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function leafText(value: unknown): string {
  if (typeof value === "string") {
    const quoted = JSON.stringify(value);
    return quoted.length > MAX_STRING ? quoted.slice(0, MAX_STRING) + "…\"" : quoted;
  }
  return JSON.stringify(value) ?? String(value);
}

/** One line of JSON for a diff or a presence state, cut at `limit` characters. */
export function shortJson(value: unknown, limit = 160): string {
  const text = value === undefined ? "(none)" : JSON.stringify(value) ?? String(value);
  return text.length > limit ? text.slice(0, limit) + "…" : text;
}

export class JsonTree {
  readonly element: HTMLElement;
  private readonly opened = new Set<string>();
  private readonly closed = new Set<string>();
  private readonly shown = new Map<string, number>(); // path -> children shown
  private nodes = new Map<string, HTMLElement>();
  private value: unknown = undefined;

  constructor(testId: string, private readonly label = "state") {
    this.element = h("div", { class: "tree", "data-testid": testId, role: "tree" });
  }

  /** Show `value`; the nodes at `flash` (JSON Pointers) flash. */
  render(value: unknown, flash: readonly string[] = []): void {
    this.value = value;
    this.nodes = new Map();
    const root = this.node(this.label, "", value, 0);
    this.element.replaceChildren(root);
    for (const path of flash) this.flash(path);
  }

  private open(path: string, depth: number): boolean {
    if (this.closed.has(path)) return false;
    return depth < OPEN_DEPTH || this.opened.has(path);
  }

  private node(key: string, path: string, value: unknown, depth: number): HTMLElement {
    const kind = kindOf(value);
    if (kind !== "object" && kind !== "array") {
      const node = h(
        "div",
        { class: "node leaf", "data-path": path, role: "treeitem" },
        h("span", { class: "key" }, key),
        h("span", { class: "colon" }, ": "),
        h("span", { class: `value ${kind}`, title: typeof value === "string" ? value : null }, leafText(value)),
      );
      this.nodes.set(path, node);
      return node;
    }
    const entries: [string, unknown][] = Array.isArray(value)
      ? value.map((item, i) => [String(i), item])
      : Object.entries(value as Record<string, unknown>);
    const summary = h(
      "summary",
      {},
      h("span", { class: "key" }, key),
      h("span", { class: "meta" }, kind === "array" ? ` [${entries.length}]` : ` {${entries.length}}`),
    );
    const details = h("details", { class: "node", "data-path": path, role: "treeitem" }, summary);
    const children = h("div", { class: "children", role: "group" });
    details.append(children);
    let filled = false;
    const fill = (): void => {
      if (filled) return;
      filled = true;
      this.fillChildren(children, path, entries, depth);
    };
    if (this.open(path, depth)) {
      details.open = true;
      fill();
    }
    details.addEventListener("toggle", () => {
      if (details.open) {
        this.closed.delete(path);
        this.opened.add(path);
        fill();
      } else {
        this.opened.delete(path);
        this.closed.add(path);
      }
    });
    this.nodes.set(path, details);
    return details;
  }

  private fillChildren(children: HTMLElement, path: string, entries: [string, unknown][], depth: number): void {
    const parent = parsePointer(path);
    const limit = this.shown.get(path) ?? PAGE;
    for (const [key, child] of entries.slice(0, limit)) {
      children.append(this.node(key, formatPointer([...parent, key]), child, depth + 1));
    }
    if (entries.length > limit) {
      children.append(
        button(`show ${Math.min(PAGE, entries.length - limit)} more of ${entries.length - limit}`, () => {
          this.shown.set(path, limit + PAGE);
          this.render(this.value);
        }, { class: "more" }),
      );
    }
  }

  /** Flash the node at `path`, or its nearest ancestor shown. */
  private flash(path: string): void {
    let tokens = parsePointer(path);
    let node = this.nodes.get(path);
    while (!node && tokens.length) {
      tokens = tokens.slice(0, -1);
      node = this.nodes.get(formatPointer(tokens));
    }
    if (!node) return;
    node.classList.add("flash");
    setTimeout(() => node.classList.remove("flash"), FLASH_MS);
  }
}
