// A workspace's Git snapshots: its commits (newest first) with the panels each one changed,
// a commit's panels as trees, and restore (offered to admins; the server checks the role).

import type { CommitState, Role, SnapshotRow, SnapshotStatus, View } from "./api";
import { enc, get, post, workspacePath } from "./api";
import { append, button, clear, confirmDialog, h, toast, when } from "./dom";
import { JsonTree } from "./tree";

// The API lets a writer restore too (docs/GIT.md); the inspector offers it to admins only,
// as its issue asked: restoring a whole workspace is the heaviest thing it can do.
const RESTORE_ROLE: Role = "admin";
const RANK: Record<Role, number> = { read: 1, write: 2, admin: 3 };

/** The panels a snapshot changed: new, or at another version than in the snapshot before. */
export function changedPanels(row: SnapshotRow, previous: SnapshotRow | undefined): string[] {
  return Object.entries(row.panelVersions)
    .filter(([panel, version]) => previous?.panelVersions[panel] !== version)
    .map(([panel]) => panel)
    .sort();
}

export class SnapshotsView {
  readonly element: HTMLElement;
  private readonly list = h("div", { class: "commits", "data-testid": "commits" }, "Loading…");
  private readonly detail = h("div", { class: "commit-detail", "data-testid": "commit-detail" });

  constructor(
    private readonly workspace: string,
    private readonly role: Role,
    private readonly openPanel: (panel: string) => void,
  ) {
    this.element = h(
      "section",
      { class: "snapshots-view", "data-testid": "snapshots-view" },
      h("header", { class: "panel-head" }, h("h2", {}, h("span", { class: "muted" }, "Snapshots of "), workspace),
        button("Refresh", () => void this.load())),
      this.list,
      this.detail,
    );
    void this.load();
  }

  private get canRestore(): boolean {
    return RANK[this.role] >= RANK[RESTORE_ROLE];
  }

  async load(): Promise<void> {
    try {
      const status = await get<SnapshotStatus>(`${workspacePath(this.workspace)}/snapshot/status`);
      this.show(status);
    } catch (error) {
      clear(this.list, `Snapshots: ${(error as Error).message}`);
    }
  }

  private show(status: SnapshotStatus): void {
    const rows = status.snapshots.filter((row) => row.gitCommitHash);
    if (rows.length === 0) {
      clear(this.list, h("p", { class: "muted" }, "No Git snapshot of this workspace yet."));
      return;
    }
    const body = rows.map((row, i) => {
      const sha = row.gitCommitHash!;
      const changed = changedPanels(row, rows[i + 1]);
      const actions = h("td", { class: "actions" }, button("Show", () => void this.showCommit(sha), { "data-testid": "commit-show" }));
      if (this.canRestore) {
        append(actions, button("Restore…", () => void this.restore(sha, Object.keys(row.panelVersions).sort()), {
          class: "danger",
          "data-testid": "restore",
        }));
      }
      return h(
        "tr",
        { "data-commit": sha },
        h("td", {}, h("code", { title: sha }, sha.slice(0, 10)), sha === status.head?.gitCommitHash ? h("span", { class: "chip" }, "head") : null),
        h("td", { title: row.createdAt }, when(row.createdAt)),
        h("td", {}, row.type),
        h("td", {}, row.description ?? ""),
        h("td", {}, row.createdBy ?? ""),
        h("td", {}, String(row.panelCount)),
        h("td", { class: "changed" }, changed.length ? changed.join(", ") : h("span", { class: "muted" }, "none")),
        actions,
      );
    });
    clear(
      this.list,
      h(
        "table",
        {},
        h("thead", {}, h("tr", {}, ...["commit", "when", "type", "description", "by", "panels", "changed panels", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...body),
      ),
    );
  }

  private async showCommit(sha: string): Promise<void> {
    clear(this.detail, "Loading…");
    try {
      const commit = await get<CommitState>(`${workspacePath(this.workspace)}/snapshot?git_commit=${enc(sha)}`);
      const panels = Object.entries(commit.panels).sort(([a], [b]) => a.localeCompare(b));
      clear(
        this.detail,
        h("h4", {}, `Commit ${commit.gitCommit.slice(0, 10)}`, h("span", { class: "muted" }, ` ${commit.subject ?? ""} · ${when(commit.committedAt)}`)),
        ...panels.map(([panel, view]) => this.commitPanel(panel, view)),
      );
    } catch (error) {
      clear(this.detail, `Commit ${sha.slice(0, 10)}: ${(error as Error).message}`);
    }
  }

  private commitPanel(panel: string, view: View & { version?: number }): HTMLElement {
    const { version, ...state } = view;
    const tree = new JsonTree(`commit-tree-${panel}`, panel);
    const box = h(
      "details",
      { class: "commit-panel", "data-panel": panel },
      h("summary", {}, panel, h("span", { class: "muted" }, version !== undefined ? ` version ${version}` : ""), " ",
        button("open live", (event) => { event.preventDefault(); this.openPanel(panel); }, { class: "link" })),
      tree.element,
    );
    box.addEventListener("toggle", () => {
      if (box.open) tree.render(state);
    }, { once: true });
    return box;
  }

  private async restore(sha: string, panels: string[]): Promise<void> {
    const boxes = panels.map((panel) => h("input", { type: "checkbox", checked: true, value: panel }));
    const ok = await confirmDialog(
      `Restore panels of ${this.workspace} to commit ${sha.slice(0, 10)}?`,
      [
        h("p", {}, "Each panel checked is put back to its state in that commit, as a new version (its history keeps the rest). Panels not in the commit are left alone; nothing is deleted."),
        h("ul", { class: "restore-panels" }, ...boxes.map((box) => h("li", {}, h("label", {}, box, ` ${box.value}`)))),
      ],
      "Restore",
    );
    if (!ok) return;
    const chosen = boxes.filter((box) => box.checked).map((box) => box.value);
    if (chosen.length === 0) {
      toast("No panel was checked: nothing restored.");
      return;
    }
    try {
      const body = chosen.length === panels.length ? { gitCommit: sha } : { gitCommit: sha, panels: chosen };
      const answer = await post<{ restoredCount: number }>(`${workspacePath(this.workspace)}/restore`, body);
      toast(`Restored ${answer.restoredCount} panel(s) to commit ${sha.slice(0, 10)}.`);
    } catch (error) {
      toast(`The restore failed: ${(error as Error).message}`, "error");
    }
  }
}
