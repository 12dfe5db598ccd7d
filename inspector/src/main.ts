// The inspector (docs/INSPECTOR.md): sign in with a token, pick a workspace and a panel.
// Every call goes through the public API with that token; what the page offers follows the
// role the server reports, and the server checks every call again.

import "./style.css";
import type { WorkspacePanel, WorkspacePanels } from "./api";
import { claims, currentToken, get, signIn, signOut, workspacePath } from "./api";
import { ago, button, bytes, clear, h, toast, when } from "./dom";
import { LiveFeed } from "./live";
import { PanelView } from "./panel";
import { SnapshotsView } from "./snapshots";

const LIST_REFRESH_MS = 5000;
const app = document.getElementById("app")!;

interface Place {
  workspace?: string;
  panel?: string;
}

function readPlace(): Place {
  const params = new URLSearchParams(location.hash.slice(1));
  const place: Place = {};
  const workspace = params.get("ws");
  const panel = params.get("panel");
  if (workspace) place.workspace = workspace;
  if (panel) place.panel = panel;
  return place;
}

function writePlace(place: Place): void {
  const params = new URLSearchParams();
  if (place.workspace) params.set("ws", place.workspace);
  if (place.panel) params.set("panel", place.panel);
  history.replaceState(null, "", `#${params}`); // no request, no token: ids only
}

// --- signing in -----------------------------------------------------------------------------

function showLogin(message = ""): void {
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "eyJhbGciOi…",
    "data-testid": "token-input",
    "aria-label": "token",
  });
  const form = h(
    "form",
    { class: "login", "data-testid": "login-form" },
    h("h1", {}, "crdt-state inspector"),
    h("label", {}, "Bearer token", input),
    h("button", { type: "submit", "data-testid": "sign-in" }, "Sign in"),
    message ? h("p", { class: "error" }, message) : null,
    h("p", { class: "hint" }, "The token stays in this tab's memory only: reloading the page signs you out. Every call is made with it, so the inspector can do only what the token may."),
    h("p", { class: "hint" }, "A server started with --dev needs no token."),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    signIn(input.value);
    input.value = "";
    new Shell().start();
  });
  clear(app, form);
  input.focus();
}

// --- the signed-in page -----------------------------------------------------------------------

class Shell {
  private workspace = "";
  private role: WorkspacePanels["role"] = "read";
  private feed: LiveFeed | null = null;
  private panelView: PanelView | null = null;
  private snapshotsView: SnapshotsView | null = null;
  private listTimer: number | undefined;
  private listSoonTimer: number | undefined;
  private readonly panelList = h("div", { class: "panel-list", "data-testid": "panel-list" });
  private readonly roleChip = h("span", { class: "chip", "data-testid": "role" });
  private readonly main = h("main", { class: "main", "data-testid": "main" });
  private readonly tabs = h("nav", { class: "tabs" });
  private tab: "panel" | "snapshots" = "panel";

  start(): void {
    const who = claims();
    const named = Object.keys(who?.workspaces ?? {}).filter((w) => w !== "*").sort();
    const input = h("input", {
      list: "claimed-workspaces",
      placeholder: "workspace id",
      "data-testid": "workspace-input",
      "aria-label": "workspace",
    });
    const form = h(
      "form",
      { class: "workspace-form" },
      input,
      h("button", { type: "submit", "data-testid": "open-workspace" }, "Open"),
      h("datalist", { id: "claimed-workspaces" }, ...named.map((w) => h("option", { value: w }))),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value.trim()) void this.openWorkspace(input.value.trim());
    });
    const expires = who?.exp ? `expires ${when(new Date(who.exp * 1000).toISOString())}` : "";
    clear(
      app,
      h(
        "header",
        { class: "top" },
        h("h1", {}, "crdt-state inspector"),
        h("span", { class: "who", "data-testid": "who" }, currentToken() ? (who?.sub ?? "token") : "no token", " ", h("span", { class: "muted" }, expires)),
        button("Sign out", () => this.signOut(), { "data-testid": "sign-out" }),
      ),
      h(
        "div",
        { class: "layout" },
        h(
          "aside",
          { class: "side" },
          h("h3", {}, "Workspace"),
          form,
          named.length
            ? h("div", { class: "claimed" }, ...named.map((w) => button(w, () => void this.openWorkspace(w), { class: "link", "data-workspace": w })))
            : null,
          h("div", {}, this.roleChip),
          h("h3", {}, "Panels"),
          this.panelList,
        ),
        h("div", { class: "content" }, this.tabs, this.main),
      ),
    );
    const place = readPlace();
    const first = place.workspace ?? (named.length === 1 ? named[0] : undefined);
    if (first) void this.openWorkspace(first, place.panel);
    else clear(this.main, h("p", { class: "muted" }, "Open a workspace."));
  }

  private signOut(): void {
    this.close();
    signOut();
    showLogin();
  }

  private close(): void {
    clearInterval(this.listTimer);
    clearTimeout(this.listSoonTimer);
    this.feed?.close();
    this.feed = null;
    this.panelView?.dispose();
    this.panelView = null;
  }

  async openWorkspace(workspace: string, panel?: string): Promise<void> {
    this.close();
    this.workspace = workspace;
    this.snapshotsView = null;
    writePlace({ workspace });
    for (const link of app.querySelectorAll<HTMLElement>("[data-workspace]")) {
      link.classList.toggle("current", link.dataset["workspace"] === workspace);
    }
    clear(this.panelList, "Loading…");
    clear(this.main);
    const listing = await this.loadList();
    if (!listing) return;
    this.feed = new LiveFeed(workspace, currentToken(), {
      sync: (m) => this.panelView?.sync(m),
      update: (m) => {
        this.panelView?.update(m);
        this.listSoon(); // its version, size and time in the list
      },
      status: (s, d) => this.panelView?.status(s, d),
    });
    this.listTimer = window.setInterval(() => void this.loadList(), LIST_REFRESH_MS);
    this.showTabs();
    if (panel) this.openPanel(panel);
    else clear(this.main, h("p", { class: "muted" }, `Pick a panel of ${workspace}.`));
  }

  private listSoon(): void {
    clearTimeout(this.listSoonTimer);
    this.listSoonTimer = window.setTimeout(() => void this.loadList(), 500);
  }

  private async loadList(): Promise<WorkspacePanels | null> {
    const workspace = this.workspace;
    try {
      const listing = await get<WorkspacePanels>(workspacePath(workspace));
      if (workspace !== this.workspace) return null;
      this.role = listing.role;
      this.roleChip.textContent = `${listing.subject} · ${listing.role}`;
      this.showList(listing);
      return listing;
    } catch (error) {
      if (workspace === this.workspace) {
        clear(this.panelList, h("p", { class: "error" }, (error as Error).message));
        clear(this.main);
        clearInterval(this.listTimer);
      }
      return null;
    }
  }

  private showList(listing: WorkspacePanels): void {
    const current = this.panelView?.panel;
    const row = (p: WorkspacePanel): HTMLElement =>
      h(
        "tr",
        { class: p.panelId === current ? "current" : null },
        h("td", {}, button(p.panelId, () => this.openPanel(p.panelId), { class: "link", "data-panel": p.panelId })),
        h("td", { class: "num" }, String(p.version)),
        h("td", { class: "num" }, bytes(p.sizeBytes)),
        h("td", { title: when(p.updatedAt) }, ago(p.updatedAt)),
        h("td", { class: "num", title: p.subjects.join(", ") }, p.connections ? `${p.connections} (${p.subjects.join(", ")})` : "0"),
      );
    clear(
      this.panelList,
      listing.panels.length
        ? h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ...["panel", "version", "size", "changed", "connected"].map((t) => h("th", {}, t)))),
            h("tbody", {}, ...listing.panels.map(row)),
          )
        : h("p", { class: "muted" }, "No panel yet."),
      listing.totalPanels > listing.panels.length
        ? h("p", { class: "muted" }, `${listing.panels.length} of ${listing.totalPanels} shown.`)
        : null,
    );
  }

  private showTabs(): void {
    const tab = (name: "panel" | "snapshots", label: string): HTMLElement =>
      button(label, () => this.showTab(name), {
        class: this.tab === name ? "tab current" : "tab",
        "data-testid": `tab-${name}`,
        "aria-pressed": this.tab === name ? "true" : "false",
      });
    clear(this.tabs, tab("panel", "Panel"), tab("snapshots", "Snapshots"));
  }

  private showTab(name: "panel" | "snapshots"): void {
    this.tab = name;
    this.showTabs();
    if (name === "snapshots") {
      this.snapshotsView ??= new SnapshotsView(this.workspace, this.role, (panel) => this.openPanel(panel));
      clear(this.main, this.snapshotsView.element);
    } else {
      clear(this.main, this.panelView?.element ?? h("p", { class: "muted" }, "Pick a panel."));
    }
  }

  openPanel(panel: string): void {
    if (!this.feed) return;
    this.panelView?.dispose();
    this.panelView = new PanelView(this.workspace, panel, this.role, { resync: () => this.feed?.resync() });
    writePlace({ workspace: this.workspace, panel });
    for (const link of this.panelList.querySelectorAll<HTMLElement>("[data-panel]")) {
      link.closest("tr")?.classList.toggle("current", link.dataset["panel"] === panel);
    }
    this.tab = "panel";
    this.showTabs();
    clear(this.main, this.panelView.element);
    this.panelView.status(...this.feed.current);
    this.feed.follow(panel);
  }
}

window.addEventListener("unhandledrejection", (event) => {
  toast(String((event.reason as Error)?.message ?? event.reason), "error");
});

showLogin();
