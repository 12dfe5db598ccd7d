// The JSON WebSocket (/ws/state/{ws}, docs/PROTOCOL.md), one panel subscribed at a time. The
// token goes as the `bearer.<token>` subprotocol (beside `crdt-state`, which the server
// selects), never in the URL. It reconnects after a drop, except when the server refused the
// token or the role (4401, 4403) or the panel (4404).

import type { PatchOp, View } from "./api";
import { enc } from "./api";

export type Status = "connecting" | "live" | "offline" | "refused";

export interface SyncMessage {
  type: "state_sync";
  panelId: string;
  state: View;
  version: number;
  epoch: string;
  timestamp: string;
}

export interface UpdateMessage {
  type: "state_update" | "state_deleted";
  panelId: string;
  version: number;
  epoch: string;
  changeType?: string;
  patch?: PatchOp[] | null;
  triggeredBy?: string;
  triggerSource?: string | null;
  timestamp?: string;
}

export interface FeedHandlers {
  sync(message: SyncMessage): void;
  update(message: UpdateMessage): void;
  status(status: Status, detail: string): void;
}

const FINAL_CODES = new Set([4400, 4401, 4403, 4404]);
const PING_MS = 25_000;

export class LiveFeed {
  private socket: WebSocket | null = null;
  private panel: string | null = null;
  private retries = 0;
  private timer: number | undefined;
  private pinger: number | undefined;
  private stopped = false;
  /** The last status reported, for a view that starts watching later. */
  current: [Status, string] = ["connecting", ""];

  constructor(
    private readonly workspace: string,
    private readonly token: string,
    private readonly handlers: FeedHandlers,
  ) {}

  /** Follow `panel` (a state_sync first, then every state_update). */
  follow(panel: string): void {
    const previous = this.panel;
    this.panel = panel;
    if (this.socket?.readyState === WebSocket.OPEN) {
      if (previous && previous !== panel) this.send({ type: "unsubscribe", panelId: previous });
      this.send({ type: "subscribe", panelId: panel });
    } else if (!this.socket) {
      this.connect();
    }
  }

  /** Subscribe again from scratch (a gap in versions: a new state_sync). */
  resync(): void {
    if (!this.panel || this.socket?.readyState !== WebSocket.OPEN) return;
    this.send({ type: "unsubscribe", panelId: this.panel });
    this.send({ type: "subscribe", panelId: this.panel });
  }

  close(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    this.socket?.close(1000, "inspector closed");
    this.socket = null;
  }

  private report(status: Status, detail: string): void {
    this.current = [status, detail];
    this.handlers.status(status, detail);
  }

  private send(message: object): void {
    this.socket?.send(JSON.stringify(message));
  }

  private connect(): void {
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws/state/${enc(this.workspace)}`;
    const protocols = this.token ? ["crdt-state", `bearer.${this.token}`] : ["crdt-state"];
    this.report("connecting", "");
    const socket = new WebSocket(url, protocols);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retries = 0;
      this.report("live", "");
      if (this.panel) this.send({ type: "subscribe", panelId: this.panel });
      this.pinger = window.setInterval(() => this.send({ type: "ping" }), PING_MS);
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => {
      clearInterval(this.pinger);
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (FINAL_CODES.has(event.code)) {
        this.report("refused", `${event.code} ${event.reason}`.trim());
        return;
      }
      const delay = Math.min(10_000, 500 * 2 ** this.retries);
      this.retries += 1;
      this.report(
        "offline",
        event.code === 1006
          ? "the connection failed (is this origin in CRDT_STATE_ALLOWED_ORIGINS?)"
          : `closed ${event.code} ${event.reason}`.trim(),
      );
      this.timer = window.setTimeout(() => this.connect(), delay);
    });
  }

  private receive(data: unknown): void {
    if (typeof data !== "string") return;
    let message: { type?: string; panelId?: string; code?: string; message?: string };
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.panelId !== undefined && message.panelId !== this.panel) return;
    switch (message.type) {
      case "state_sync":
        this.handlers.sync(message as SyncMessage);
        break;
      case "state_update":
      case "state_deleted":
        this.handlers.update(message as UpdateMessage);
        break;
      case "error":
        this.report("live", `${message.code}: ${message.message}`);
        break;
    }
  }
}
