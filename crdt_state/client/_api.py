"""Every endpoint of the REST API, once. Each method builds a `Call` and hands it to
`_send`; `StateClient` sends it with httpx.AsyncClient (the method then returns an awaitable),
`SyncStateClient` with httpx.Client (the method returns the answer). Names, arguments and
answers are the same on both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from ._call import Call, segment

Answer = TypeVar("Answer")
JSONPatch = Sequence[Mapping[str, Any]]


class StateApi(Generic[Answer]):
    """The methods both clients share. Answers are the API's JSON objects, as dicts."""

    def _send(self, call: Call) -> Answer:
        raise NotImplementedError

    # --- panels -----------------------------------------------------------------------

    def get_state(
        self,
        workspace_id: str,
        panel_id: str,
        version: int | None = None,
        *,
        include_history: bool = False,
    ) -> Answer:
        """The panel now, or as it was at `version`: `{workspaceId, panelId, state, version,
        epoch, updatedAt, ...}`; with `include_history`, the newest entries too."""
        params: dict[str, str] = {}
        if version is not None:
            params["version"] = str(version)
        if include_history:
            params["include_history"] = "true"
        return self._send(Call("GET", _panel(workspace_id, panel_id), params))

    def update_state(
        self,
        workspace_id: str,
        panel_id: str,
        state: Mapping[str, Any],
        version: int | None = None,
        triggered_by: str = "user",
        *,
        trigger_source: str | None = None,
        idempotency_key: str | None = None,
    ) -> Answer:
        """Replace the roots given in `state` (`{"$state": {...}, "$computed": {...}}`),
        creating the panel if missing. With `version`, a panel at another version raises
        VersionConflict (`.current_version`)."""
        body = _attributed({"state": state}, triggered_by, trigger_source)
        if version is not None:
            body["version"] = version
        path = _panel(workspace_id, panel_id)
        return self._send(Call("PUT", path, json=body, keyed=True, idempotency_key=idempotency_key))

    def patch_state(
        self,
        workspace_id: str,
        panel_id: str,
        patches: JSONPatch,
        version: int | None = None,
        strict: bool = False,
        dry_run: bool = False,
        triggered_by: str = "user",
        *,
        trigger_source: str | None = None,
        snapshot_before: bool = False,
        idempotency_key: str | None = None,
    ) -> Answer:
        """Apply a JSON Patch (RFC 6902), all operations or none. `version`: the version the
        paths were computed against; older than the panel's, the patch is merged as a
        concurrent change, unless `strict` (then VersionConflict). `dry_run`: answers with
        the resulting `state`, changes nothing."""
        body = _attributed({"patches": list(patches)}, triggered_by, trigger_source)
        if version is not None:
            body["version"] = version
        if strict:
            body["strict"] = True
        if snapshot_before:
            body["snapshotBefore"] = True
        params = {"dryRun": "true"} if dry_run else {}
        path = _panel(workspace_id, panel_id)
        return self._send(
            Call("PATCH", path, params, body, keyed=True, idempotency_key=idempotency_key)
        )

    def delete_state(self, workspace_id: str, panel_id: str) -> Answer:
        """Delete the panel (admin): its history stays; re-creating it starts a new epoch."""
        return self._send(Call("DELETE", _panel(workspace_id, panel_id)))

    def get_history(
        self,
        workspace_id: str,
        panel_id: str,
        *,
        limit: int | None = None,
        offset: int | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> Answer:
        """The panel's changes, newest first: `{history: [...], totalChanges, ...}`.
        `since`/`until`: times with a zone (aware datetimes or ISO-8601 strings)."""
        params = _params(limit=limit, offset=offset, since=since, until=until)
        return self._send(Call("GET", f"{_panel(workspace_id, panel_id)}/history", params))

    def revert(
        self,
        workspace_id: str,
        panel_id: str,
        target_version: int,
        *,
        create_snapshot: bool = False,
        triggered_by: str = "user",
        trigger_source: str | None = None,
        idempotency_key: str | None = None,
    ) -> Answer:
        """A new version whose state is the state at `target_version` (`revertedTo`);
        `create_snapshot`: a Git snapshot of the workspace first (`snapshotId`)."""
        body = _attributed({"targetVersion": target_version}, triggered_by, trigger_source)
        if create_snapshot:
            body["createSnapshot"] = True
        path = f"{_panel(workspace_id, panel_id)}/revert"
        return self._send(
            Call("POST", path, json=body, keyed=True, idempotency_key=idempotency_key)
        )

    # --- workspaces: snapshots, restore, AI context ---------------------------------------

    def get_snapshot(self, workspace_id: str, git_commit: str | None = None) -> Answer:
        """Every panel of the workspace now, or as committed in `git_commit`."""
        params = _params(git_commit=git_commit)
        return self._send(Call("GET", f"{_workspace(workspace_id)}/snapshot", params))

    def create_snapshot(
        self,
        workspace_id: str,
        *,
        snapshot_type: str = "manual",
        description: str | None = None,
        commit_to_git: bool = True,
        idempotency_key: str | None = None,
    ) -> Answer:
        """Take a snapshot of the workspace (admin): `{snapshotId, gitCommitHash, ...}`."""
        body: dict[str, Any] = {"type": snapshot_type, "commitToGit": commit_to_git}
        if description is not None:
            body["description"] = description
        path = f"{_workspace(workspace_id)}/snapshot"
        return self._send(
            Call("POST", path, json=body, keyed=True, idempotency_key=idempotency_key)
        )

    def get_snapshot_status(self, workspace_id: str) -> Answer:
        """The workspace's Git head, push state and recent snapshots."""
        return self._send(Call("GET", f"{_workspace(workspace_id)}/snapshot/status"))

    def restore(
        self,
        workspace_id: str,
        git_commit: str,
        panels: Iterable[str] | None = None,
        *,
        triggered_by: str = "user",
        idempotency_key: str | None = None,
    ) -> Answer:
        """Panels back to their state in `git_commit` (all of the commit's, or `panels`)."""
        body = _attributed({"gitCommit": git_commit}, triggered_by, None)
        if panels is not None:
            body["panels"] = [panels] if isinstance(panels, str) else list(panels)
        path = f"{_workspace(workspace_id)}/restore"
        return self._send(
            Call("POST", path, json=body, keyed=True, idempotency_key=idempotency_key)
        )

    def get_context(
        self,
        workspace_id: str,
        *,
        format: str = "markdown",
        panels: Iterable[str] | None = None,
        max_tokens: int | None = None,
        changes_since: int | datetime | str | Mapping[str, int] | None = None,
        recent_changes: int | None = None,
    ) -> Answer:
        """The workspace's state for an AI model's prompt (`GET .../context`): the text in
        `context`, every panel's version in `versions`. `changes_since`: a version, a time,
        or an earlier answer's `versions` (the string, or a {panel: version} mapping)."""
        if isinstance(changes_since, Mapping):
            changes_since = ",".join(f"{segment(p)}={v}" for p, v in changes_since.items())
        params: dict[str, str | list[str]] = {}
        params.update(
            _params(
                format=format,
                maxTokens=max_tokens,
                changesSince=changes_since,
                recentChanges=recent_changes,
            )
        )
        if panels is not None:
            # `panels` is comma-separated; an id holding a comma goes in a `panel` of its own.
            chosen = [panels] if isinstance(panels, str) else list(panels)
            plain, with_comma = [p for p in chosen if "," not in p], [p for p in chosen if "," in p]
            if plain or not with_comma:
                params["panels"] = ",".join(plain)
            if with_comma:
                params["panel"] = with_comma
        return self._send(Call("GET", f"{_workspace(workspace_id)}/context", params))


def _workspace(workspace_id: str) -> str:
    return f"/api/state/{segment(workspace_id)}"


def _panel(workspace_id: str, panel_id: str) -> str:
    return f"{_workspace(workspace_id)}/{segment(panel_id)}"


def _attributed(
    body: dict[str, Any], triggered_by: str, trigger_source: str | None
) -> dict[str, Any]:
    body["triggeredBy"] = triggered_by
    if trigger_source is not None:
        body["triggerSource"] = trigger_source
    return body


def _params(**values: object) -> dict[str, str]:
    """Query parameters: None left out, datetimes as ISO-8601, booleans as true/false."""
    params = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            params[name] = value.isoformat()
        elif isinstance(value, bool):
            params[name] = "true" if value else "false"
        else:
            params[name] = str(value)
    return params
