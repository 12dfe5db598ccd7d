// The public API, called with the user's token: the inspector has no privilege of its own.
// The token lives in this module's memory only (never in storage, cookies or URLs): reloading
// the page signs out.

export interface Claims {
  sub?: string;
  exp?: number;
  admin?: boolean;
  workspaces?: Record<string, string>;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let token = "";

export function signIn(value: string): void {
  token = value.trim();
}

export function signOut(): void {
  token = "";
}

export function currentToken(): string {
  return token;
}

/** The token's claims, read without checking the signature: only a hint of what to offer
 * (its workspaces); the server decides every call. */
export function claims(): Claims | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1]!.replace(/-/g, "+").replace(/_/g, "/");
    const text = new TextDecoder().decode(
      Uint8Array.from(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")), (c) =>
        c.charCodeAt(0),
      ),
    );
    const parsed: unknown = JSON.parse(text);
    return parsed && typeof parsed === "object" ? (parsed as Claims) : null;
  } catch {
    return null;
  }
}

export const enc = encodeURIComponent;

export function workspacePath(workspace: string): string {
  return `/api/state/${enc(workspace)}`;
}

export function panelPath(workspace: string, panel: string): string {
  return `${workspacePath(workspace)}/${enc(panel)}`;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (token) headers["Authorization"] = `Bearer ${token}`;
  const init: RequestInit = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    headers["Idempotency-Key"] = crypto.randomUUID(); // a retry of this click applies once
    init.body = JSON.stringify(body);
  }
  let answer: Response;
  try {
    answer = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "network", `The server did not answer (${String(error)}).`);
  }
  const text = await answer.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!answer.ok) {
    const error = (parsed ?? {}) as { error?: string; message?: string };
    throw new ApiError(
      answer.status,
      error.error ?? "http_error",
      error.message ?? `${method} ${path} answered ${answer.status}.`,
    );
  }
  return parsed as T;
}

export function get<T>(path: string): Promise<T> {
  return call<T>("GET", path);
}

export function post<T>(path: string, body: unknown): Promise<T> {
  return call<T>("POST", path, body);
}

// --- the answers the inspector reads (docs/API.md) --------------------------------------

export type Role = "read" | "write" | "admin";
export type View = Record<string, unknown>;

export interface WorkspacePanel {
  panelId: string;
  version: number;
  epoch: string;
  sizeBytes: number;
  updatedAt: string | null;
  connections: number;
  subjects: string[];
}

export interface WorkspacePanels {
  workspaceId: string;
  subject: string;
  role: Role;
  panels: WorkspacePanel[];
  totalPanels: number;
}

export interface PanelState {
  state: View;
  version: number;
  epoch: string;
  updatedAt: string | null;
  currentVersion?: number;
}

export interface PatchOp {
  op: "add" | "remove" | "replace" | "move" | "copy" | "test";
  path: string;
  from?: string;
  value?: unknown;
}

export interface HistoryEntry {
  version: number;
  epoch: string;
  changeType: string;
  patch: PatchOp[] | null;
  triggeredBy: "user" | "ai" | "system";
  triggerSource: string | null;
  subject: string | null;
  sizeBytes: number;
  occurredAt: string;
}

export interface HistoryPage {
  history: HistoryEntry[];
  totalChanges: number;
}

export interface Presence {
  live: boolean;
  clients: { clientId: number; clock: number; state: unknown }[];
  connections: { subject: string; canWrite: boolean }[];
}

export interface SnapshotRow {
  snapshotId: string;
  type: string;
  description: string | null;
  panelCount: number;
  totalSizeBytes: number;
  gitCommitHash: string | null;
  panelVersions: Record<string, number>;
  createdBy: string | null;
  createdAt: string;
}

export interface SnapshotStatus {
  head: { gitCommitHash: string; committedAt: string; subject: string; author: string } | null;
  snapshots: SnapshotRow[];
}

export interface CommitState {
  gitCommit: string;
  committedAt?: string;
  subject?: string;
  panels: Record<string, View & { version?: number }>;
}
