// One panel: its JSON, live; its history as a timeline, each version's patch as a diff; time
// travel to any version; revert to one (write role, confirmed); who is in it now.

import type { HistoryEntry, HistoryPage, PanelState, Presence, Role, View } from "./api";
import { ApiError, get, panelPath, post } from "./api";
import { ago, append, button, clear, confirmDialog, h, toast, when } from "./dom";
import type { Status, SyncMessage, UpdateMessage } from "./live";
import { applyPatch, changedPaths, describe, type DiffLine } from "./patch";
import { JsonTree, shortJson } from "./tree";

const HISTORY_PAGE = 50;
const PRESENCE_MS = 3000;
const TRAVEL_DEBOUNCE_MS = 150;
const RANK: Record<Role, number> = { read: 1, write: 2, admin: 3 };

export interface PanelHost {
  resync(): void;
}

export class PanelView {
  readonly element: HTMLElement;
  private readonly tree = new JsonTree("state-tree");
  private readonly statusChip = h("span", { class: "chip status", "data-testid": "live-status" }, "connecting…");
  private readonly versionChip = h("span", { class: "chip", "data-testid": "panel-version" }, "");
  private readonly slider = h("input", {
    type: "range",
    min: 1,
    max: 1,
    value: 1,
    step: 1,
    "data-testid": "version-slider",
    "aria-label": "version",
  });
  private readonly travelLabel = h("span", { class: "travel-label", "data-testid": "version-label" });
  private readonly travelActions = h("span", { class: "travel-actions" });
  private readonly banner = h("div", { class: "banner", "data-testid": "travel-banner", hidden: true });
  private readonly timeline = h("ol", { class: "timeline", "data-testid": "timeline" });
  private readonly more = h("div", { class: "timeline-more" });
  private readonly presence = h("div", { class: "presence", "data-testid": "presence" }, "…");
  private live: View | null = null;
  private liveVersion = 0;
  private epoch = "";
  private viewing: number | null = null; // null: live
  private history: HistoryEntry[] = [];
  private totalChanges = 0;
  private readonly expanded = new Set<number>();
  private readonly missed = new Set<string>(); // paths changed live, not rendered yet
  private readonly before = new Map<number, View | null>(); // version -> state at version - 1
  private travelTicket = 0;
  private travelTimer: number | undefined;
  private historyTimer: number | undefined;
  private presenceTimer: number | undefined;
  private disposed = false;
  private frame: number | undefined;

  constructor(
    readonly workspace: string,
    readonly panel: string,
    private readonly role: Role,
    private readonly host: PanelHost,
  ) {
    this.slider.addEventListener("input", () => this.travel(Number(this.slider.value)));
    this.element = h(
      "section",
      { class: "panel-view", "data-testid": "panel-view" },
      h(
        "header",
        { class: "panel-head" },
        h("h2", {}, h("span", { class: "muted" }, `${workspace} / `), panel),
        this.versionChip,
        this.statusChip,
      ),
      h(
        "div",
        { class: "travel" },
        button("◀", () => this.step(-1), { "data-testid": "step-back", title: "one version back" }),
        this.slider,
        button("▶", () => this.step(1), { "data-testid": "step-forward", title: "one version forward" }),
        this.travelLabel,
        this.travelActions,
      ),
      this.banner,
      h(
        "div",
        { class: "columns" },
        h("div", { class: "column" }, h("h3", {}, "State"), this.tree.element),
        h("div", { class: "column" }, h("h3", {}, "History"), this.timeline, this.more),
      ),
      h("h3", {}, "Presence"),
      this.presence,
    );
    this.showTravel();
    void this.loadHistory();
    void this.loadPresence();
    this.presenceTimer = window.setInterval(() => void this.loadPresence(), PRESENCE_MS);
  }

  dispose(): void {
    this.disposed = true;
    clearInterval(this.presenceTimer);
    clearTimeout(this.historyTimer);
    clearTimeout(this.travelTimer);
    if (this.frame !== undefined) cancelAnimationFrame(this.frame);
  }

  private get canWrite(): boolean {
    return RANK[this.role] >= RANK.write;
  }

  // --- the live feed ----------------------------------------------------------------------

  status(status: Status, detail: string): void {
    const text = { connecting: "connecting…", live: "live", offline: "offline", refused: "refused" }[status];
    this.statusChip.textContent = detail ? `${text} — ${detail}` : text;
    this.statusChip.className = `chip status ${status}`;
  }

  sync(message: SyncMessage): void {
    this.missed.clear();
    this.live = message.state;
    this.liveVersion = message.version;
    this.epoch = message.epoch;
    if (this.viewing === null) this.tree.render(this.live);
    this.showTravel();
    this.refreshHistorySoon();
  }

  update(message: UpdateMessage): void {
    if (message.type === "state_deleted") {
      this.live = null;
      this.liveVersion = message.version;
      this.tree.render({ deleted: true });
      this.banner.hidden = false;
      this.banner.textContent = `The panel was deleted (version ${message.version}).`;
      this.refreshHistorySoon();
      return;
    }
    if (message.version <= this.liveVersion && message.epoch === this.epoch) return;
    if (message.epoch !== this.epoch || message.version !== this.liveVersion + 1 || !message.patch || !this.live) {
      this.host.resync(); // a gap or a new epoch: start again from a state_sync
      return;
    }
    try {
      this.live = applyPatch(this.live, message.patch);
    } catch {
      this.host.resync();
      return;
    }
    this.liveVersion = message.version;
    for (const path of changedPaths(message.patch)) this.missed.add(path);
    if (this.viewing === null) this.renderLiveSoon(); // else flashed on going live
    this.showTravel();
    this.refreshHistorySoon();
  }

  // --- time travel ------------------------------------------------------------------------

  private step(delta: number): void {
    const from = this.viewing ?? this.liveVersion;
    this.travel(Math.max(1, Math.min(this.liveVersion, from + delta)));
  }

  /** Show version `version` (the live state when it is the current one). */
  travel(version: number): void {
    clearTimeout(this.travelTimer);
    if (version >= this.liveVersion) {
      this.goLive();
      return;
    }
    this.viewing = version;
    this.showTravel();
    this.travelTimer = window.setTimeout(() => void this.fetchVersion(version), TRAVEL_DEBOUNCE_MS);
  }

  private async fetchVersion(version: number): Promise<void> {
    const ticket = ++this.travelTicket;
    try {
      const answer = await get<PanelState>(`${panelPath(this.workspace, this.panel)}?version=${version}`);
      if (ticket !== this.travelTicket || this.viewing !== version || this.disposed) return;
      const entry = this.history.find((item) => item.version === version);
      this.tree.render(answer.state, entry?.patch ? changedPaths(entry.patch) : []);
      this.banner.hidden = false;
      clear(
        this.banner,
        `Showing version ${version} as it was ${when(answer.updatedAt)}, not live: `,
        `changes go on arriving (now version ${this.liveVersion}).`,
      );
    } catch (error) {
      if (ticket !== this.travelTicket) return;
      this.banner.hidden = false;
      this.banner.textContent = `Version ${version} cannot be shown: ${(error as Error).message}`;
    }
  }

  /** Render the live state once per frame however many updates arrive (a burst of typing). */
  private renderLiveSoon(): void {
    if (this.frame !== undefined) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = undefined;
      if (this.viewing !== null || !this.live || this.disposed) return;
      this.tree.render(this.live, [...this.missed]);
      this.missed.clear();
    });
  }

  goLive(): void {
    clearTimeout(this.travelTimer);
    this.travelTicket += 1;
    this.viewing = null;
    this.banner.hidden = true;
    if (this.live) this.tree.render(this.live, [...this.missed]);
    this.missed.clear();
    this.showTravel();
  }

  private showTravel(): void {
    const max = Math.max(1, this.liveVersion);
    this.slider.max = String(max);
    this.slider.value = String(this.viewing ?? max);
    this.slider.disabled = this.liveVersion <= 1;
    this.versionChip.textContent = `version ${this.liveVersion}`;
    this.travelLabel.textContent =
      this.viewing === null ? `live · version ${this.liveVersion}` : `version ${this.viewing} of ${this.liveVersion}`;
    clear(this.travelActions);
    if (this.viewing !== null) {
      append(this.travelActions, button("Back to live", () => this.goLive(), { "data-testid": "go-live" }));
      if (this.canWrite) {
        const target = this.viewing;
        append(
          this.travelActions,
          button(`Revert to version ${target}…`, () => void this.revert(target), {
            class: "danger",
            "data-testid": "revert",
          }),
        );
      }
    }
    for (const item of this.timeline.children) {
      const version = Number((item as HTMLElement).dataset["version"]);
      item.classList.toggle("selected", version === (this.viewing ?? this.liveVersion));
    }
  }

  private async revert(target: number): Promise<void> {
    const ok = await confirmDialog(
      `Revert ${this.panel} to version ${target}?`,
      [
        h("p", {}, `A new version (change type “reverted”) will make the state equal to version ${target}'s.`),
        h("p", {}, `Nothing is lost: the history keeps every version (now ${this.liveVersion}), and a revert can itself be reverted.`),
      ],
      `Revert to version ${target}`,
    );
    if (!ok) return;
    try {
      const answer = await post<{ version: number; changed: boolean }>(
        `${panelPath(this.workspace, this.panel)}/revert`,
        { targetVersion: target, triggerSource: "inspector" },
      );
      toast(
        answer.changed
          ? `Reverted to version ${target}: the panel is now at version ${answer.version}.`
          : `Version ${target} equals the current state: nothing changed.`,
      );
      this.goLive();
    } catch (error) {
      toast(`The revert failed: ${(error as Error).message}`, "error");
    }
  }

  // --- history ----------------------------------------------------------------------------

  private refreshHistorySoon(): void {
    clearTimeout(this.historyTimer);
    this.historyTimer = window.setTimeout(() => void this.loadHistory(), 250);
  }

  private async loadHistory(older = false): Promise<void> {
    const offset = older ? this.history.length : 0;
    const limit = older ? HISTORY_PAGE : Math.min(1000, Math.max(HISTORY_PAGE, this.history.length));
    try {
      const page = await get<HistoryPage>(
        `${panelPath(this.workspace, this.panel)}/history?limit=${limit}&offset=${offset}`,
      );
      if (this.disposed) return;
      this.history = older ? [...this.history, ...page.history] : page.history;
      this.totalChanges = page.totalChanges;
      this.renderTimeline();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        clear(this.timeline, h("li", { class: "muted" }, "No history."));
        return;
      }
      toast(`History: ${(error as Error).message}`, "error");
    }
  }

  private renderTimeline(): void {
    clear(this.timeline, ...this.history.map((entry) => this.entry(entry)));
    clear(this.more);
    if (this.history.length < this.totalChanges) {
      append(
        this.more,
        button(`Older (${this.totalChanges - this.history.length} more)`, () => void this.loadHistory(true)),
      );
    }
    this.showTravel();
  }

  private entry(entry: HistoryEntry): HTMLElement {
    const head = h(
      "button",
      { type: "button", class: "entry-head", "data-testid": `entry-${entry.version}` },
      h("span", { class: "v" }, `v${entry.version}`),
      h("span", { class: `author ${entry.triggeredBy}` }, entry.triggeredBy),
      h("span", { class: "change" }, entry.changeType),
      entry.triggerSource ? h("span", { class: "source" }, entry.triggerSource) : null,
      entry.subject ? h("span", { class: "subject" }, entry.subject) : null,
      h("time", { datetime: entry.occurredAt, title: when(entry.occurredAt) }, ago(entry.occurredAt)),
    );
    head.addEventListener("click", () => this.select(entry));
    const item = h("li", { class: "entry", "data-version": entry.version, "data-change": entry.changeType }, head);
    if (this.expanded.has(entry.version)) item.append(this.diff(entry));
    return item;
  }

  private select(entry: HistoryEntry): void {
    if (this.expanded.has(entry.version) && (this.viewing ?? this.liveVersion) === entry.version) {
      this.expanded.delete(entry.version);
    } else {
      this.expanded.add(entry.version);
      if (!this.before.has(entry.version) && entry.version > 1) void this.loadBefore(entry.version);
    }
    this.travel(entry.version);
    this.renderTimeline();
  }

  private async loadBefore(version: number): Promise<void> {
    try {
      const answer = await get<PanelState>(`${panelPath(this.workspace, this.panel)}?version=${version - 1}`);
      this.before.set(version, answer.state);
    } catch {
      this.before.set(version, null); // not reachable (another epoch, compacted): no old values
    }
    if (!this.disposed) this.renderTimeline();
  }

  private diff(entry: HistoryEntry): HTMLElement {
    const box = h("div", { class: "diff", "data-testid": `diff-${entry.version}` });
    if (!entry.patch) {
      append(box, h("div", { class: "muted" }, "The patch of this version is not kept (compacted)."));
      return box;
    }
    if (entry.patch.length === 0) {
      append(box, h("div", { class: "muted" }, "No change to the JSON."));
      return box;
    }
    const before = this.before.get(entry.version);
    for (const line of describe(entry.patch, before ?? undefined)) append(box, diffLine(line));
    return box;
  }

  // --- presence ---------------------------------------------------------------------------

  private async loadPresence(): Promise<void> {
    try {
      const answer = await get<Presence>(`${panelPath(this.workspace, this.panel)}/presence`);
      if (!this.disposed) this.showPresence(answer);
    } catch (error) {
      if (!this.disposed) this.presence.textContent = `Presence: ${(error as Error).message}`;
    }
  }

  private showPresence(answer: Presence): void {
    if (!answer.live || (answer.clients.length === 0 && answer.connections.length === 0)) {
      clear(this.presence, h("span", { class: "muted" }, "Nobody is connected (on this replica)."));
      return;
    }
    const people = answer.clients.map((client) => {
      const state = (client.state ?? {}) as { user?: { name?: unknown; color?: unknown }; name?: unknown };
      const name = state.user?.name ?? state.name;
      const swatch = h("span", { class: "swatch" });
      const color = state.user?.color;
      if (typeof color === "string" && /^(#[0-9a-fA-F]{3,8}|[a-z]{3,20})$/.test(color)) {
        swatch.style.backgroundColor = color; // CSSOM: no markup, no inline style attribute
      }
      return h(
        "li",
        { "data-client": client.clientId },
        swatch,
        h("strong", {}, typeof name === "string" ? name : `client ${client.clientId}`),
        " ",
        h("code", {}, shortJson(client.state)),
      );
    });
    const connections = answer.connections.map((c) =>
      h("li", {}, c.subject, " ", h("span", { class: "chip" }, c.canWrite ? "can write" : "read-only")),
    );
    clear(
      this.presence,
      h("div", {}, `${answer.clients.length} awareness state(s):`),
      h("ul", { class: "people" }, ...people),
      h("div", {}, `${answer.connections.length} Yjs connection(s) on this replica:`),
      h("ul", { class: "connections" }, ...connections),
    );
  }
}

const SIGNS: Record<DiffLine["op"], string> = { add: "+", remove: "−", replace: "~", move: "→", copy: "⧉", test: "?" };

function diffLine(line: DiffLine): HTMLElement {
  const parts: (Node | string)[] = [
    h("span", { class: "sign" }, SIGNS[line.op]),
    h("code", { class: "path" }, line.path || "(root)"),
  ];
  const value = (v: unknown, cls: string): HTMLElement => h("code", { class: cls }, shortJson(v));
  switch (line.op) {
    case "add":
      parts.push(" = ", value(line.after, "new"));
      if (line.before !== undefined) parts.push(" (was ", value(line.before, "old"), ")");
      break;
    case "remove":
      if (line.known) parts.push(" was ", value(line.before, "old"));
      break;
    case "replace":
      parts.push(": ");
      if (line.known) parts.push(value(line.before, "old"), " → ");
      parts.push(value(line.after, "new"));
      break;
    case "move":
    case "copy":
      parts.push(" from ", h("code", { class: "path" }, line.from ?? ""));
      if (line.after !== undefined) parts.push(" = ", value(line.after, "new"));
      break;
    case "test":
      parts.push(" is ", value(line.after, "new"));
      break;
  }
  return h("div", { class: `line ${line.op}` }, ...parts);
}
