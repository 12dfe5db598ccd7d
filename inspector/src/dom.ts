// A few DOM helpers. Text always goes in as text (textContent), never as HTML: the page's CSP
// requires Trusted Types for script sinks, and nothing here needs one.

export type Child = Node | string | number | null | undefined | false;
export type Attrs = Record<string, string | number | boolean | null | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, ...children);
  return node;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(node: Node, ...children: Child[]): void {
  while (node.firstChild) node.removeChild(node.firstChild);
  append(node, ...children);
}

export function button(
  label: Child,
  onClick: (event: MouseEvent) => void,
  attrs: Attrs = {},
): HTMLButtonElement {
  const node = h("button", { type: "button", ...attrs }, label);
  node.addEventListener("click", onClick);
  return node;
}

const UNITS = ["B", "KiB", "MiB", "GiB"];

export function bytes(size: number): string {
  let value = size;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${UNITS[unit]}`;
}

export function when(iso: string | null | undefined): string {
  if (!iso) return "—";
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return iso;
  return moment.toLocaleString();
}

export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "";
  const seconds = Math.round((now - new Date(iso).getTime()) / 1000);
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 5) return "just now";
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

/** A modal question: resolves true when the user confirms. */
export function confirmDialog(title: string, body: Child[], confirmLabel: string): Promise<boolean> {
  return new Promise((resolve) => {
    const ok = h("button", { type: "button", class: "danger", "data-testid": "confirm-ok" }, confirmLabel);
    const cancel = h("button", { type: "button", "data-testid": "confirm-cancel" }, "Cancel");
    const dialog = h(
      "dialog",
      { class: "confirm", "data-testid": "confirm-dialog", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      h("div", { class: "confirm-body" }, ...body),
      h("div", { class: "actions" }, cancel, ok),
    );
    let answered = false;
    const finish = (answer: boolean): void => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    ok.addEventListener("click", () => finish(true));
    cancel.addEventListener("click", () => finish(false));
    dialog.addEventListener("close", () => finish(false));
    document.body.appendChild(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** A short message at the bottom of the page. */
export function toast(message: string, kind: "info" | "error" = "info"): void {
  let area = document.getElementById("toasts");
  if (!area) {
    area = h("div", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.appendChild(area);
  }
  const item = h("div", { class: `toast ${kind}`, "data-testid": "toast" }, message);
  area.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 9000 : 4000);
}
