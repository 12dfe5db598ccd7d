"""SnapshotRepository on bare Git repositories, one per workspace, written with dulwich.

Objects (blobs, trees, commits) go straight into the object database: no index and no work
tree, so writers never fight over `index.lock` and readers never see a half-checked-out
state. The branch moves by compare-and-swap. Push and gc use the `git` CLI, off the write
path. Why dulwich, and the measurements behind it: docs/GIT.md.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import functools
import hashlib
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from dulwich.errors import ChecksumMismatch, NotGitRepository, ObjectFormatException
from dulwich.file import FileLocked
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import Repo

from crdt_state.errors import BadRequest, StateError, Unavailable
from crdt_state.snapshot_repository import (
    PANELS_DIR,
    AmbiguousSha,
    CommitInfo,
    CommitNotFound,
    CommitResult,
    GitCommandFailed,
    RepositoryBusy,
    RepositoryCorrupt,
    Trailers,
    WorkspaceSnapshot,
    check_sha,
    format_commit_message,
    panel_file_name,
    panel_id_from_file_name,
    workspace_dir_name,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
ObjT = TypeVar("ObjT", bound=ShaFile)

BLOB_MODE = 0o100644
TREE_MODE = 0o040000
PANELS = PANELS_DIR.encode()
# Past this many new objects one pack file is cheaper than as many loose files (a first
# snapshot of 1,000 panels: ~0.08 s instead of ~0.25 s). Small commits stay loose, so they
# do not leave a pack each behind them.
PACK_THRESHOLD = 64
STALE_LOCK_SECONDS = 60.0
_HEX40 = re.compile(rb"[0-9a-f]{40}")
_IDENTITY = re.compile(r"[^<>\n\r]+ <[^<>\n\r]*>")
_USERINFO = re.compile(r"//[^/@]*@")
_CORRUPTION = (ChecksumMismatch, ObjectFormatException, zlib.error, OSError, ValueError)

# One writer per repository in this process, whichever adapter instance (or event loop) asks;
# other processes are kept honest by the compare-and-swap on the branch.
_path_locks: dict[str, threading.Lock] = {}
_path_locks_guard = threading.Lock()


def _path_lock(path: Path) -> threading.Lock:
    key = os.path.realpath(path)
    with _path_locks_guard:
        return _path_locks.setdefault(key, threading.Lock())


def _identity(person: str) -> bytes:
    """`Name <email>` as Git wants it; a plain name gets an empty address."""
    person = person.strip()
    if _IDENTITY.fullmatch(person):
        return person.encode()
    if person and not any(c in person for c in "<>\n\r"):
        return f"{person} <>".encode()
    raise BadRequest(f"The author {person!r} must be 'Name <email>' or a plain name.")


def _redact(url: str) -> str:
    return _USERINFO.sub("//***@", url)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass(slots=True)
class _Head:
    """The branch head a writer built on last: reused so a one-panel change writes one blob."""

    commit: ObjectID
    tree: ObjectID
    entries: dict[bytes, ObjectID]  # file name in panels/ -> blob id
    stored: set[ObjectID]  # blob ids known to be in the object database
    # The bytes each blob was made from: a panel handed in again with equal bytes keeps its
    # blob id without hashing (a memcmp, or nothing when it is the very same object).
    sources: dict[bytes, bytes] = field(default_factory=dict)

    def blob_ids(self, files: Mapping[bytes, bytes]) -> dict[bytes, ObjectID]:
        ids = {}
        for name, data in files.items():
            source = self.sources.get(name)
            same = source is not None and (source is data or source == data)
            ids[name] = self.entries[name] if same else _blob_id(data)
        return ids


@dataclass(slots=True)
class _PushState:
    url: str
    state: str = "idle"  # idle | pushing | retrying | ok | failed
    wanted: bool = False  # a commit landed since the current push started
    attempts: int = 0  # failed attempts in a row
    pushed_sha: str | None = None
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    next_retry_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "url": _redact(self.url),
            "state": self.state,
            "pushed_sha": self.pushed_sha,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_attempt_at": _iso(self.last_attempt_at),
            "last_success_at": _iso(self.last_success_at),
            "next_retry_at": _iso(self.next_retry_at),
        }


class GitSnapshotRepository:
    """Snapshots in `{root}/{encoded workspace}.git`, bare repositories on branch `branch`.

    `push_url_template` ("/srv/remotes/{workspace}.git", "git@host:ws/{workspace}.git")
    gets the encoded workspace name; after each new commit the branch is pushed in the
    background, retried `push_retries` times with doubling back-off."""

    def __init__(
        self,
        root: Path,
        *,
        push_url_template: str | None = None,
        push_retries: int = 5,
        push_backoff: float = 1.0,
        push_backoff_max: float = 60.0,
        push_timeout: float = 120.0,
        gc_timeout: float = 600.0,
        branch: str = "main",
        committer: str = "crdt-state <crdt-state@localhost>",
        workers: int = 4,
        cas_attempts: int = 100,
        cached_heads: int = 64,
    ) -> None:
        self._ref = Ref(f"refs/heads/{branch}".encode())
        if not check_ref_format(self._ref):
            raise ValueError(f"{branch!r} is not a valid branch name")
        self._root = Path(root)
        self._push_template = push_url_template
        self._push_retries = push_retries
        self._push_backoff = (push_backoff, push_backoff_max)
        self._push_timeout = push_timeout
        self._gc_timeout = gc_timeout
        self._committer = _identity(committer)
        self._cas_attempts = cas_attempts
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="git-snapshots")
        self._locks: dict[str, asyncio.Lock] = {}
        # The last head each writer built, per repository: bounded, since it holds references
        # to a workspace's panel bytes.
        self._heads: OrderedDict[str, _Head] = OrderedDict()
        self._heads_guard = threading.Lock()
        self._cached_heads = cached_heads
        self._pushes: dict[str, _PushState] = {}
        self._closed = False

    # --- the port -------------------------------------------------------------------------

    async def commit(
        self,
        workspace: str,
        panels: Mapping[str, bytes],
        message: str,
        trailers: Trailers,
        author: str,
    ) -> CommitResult:
        path = self._repo_path(workspace)
        text = format_commit_message(message, trailers).encode("utf-8")
        files = _panel_files(panels)
        who = _identity(author)
        async with self._lock(path):
            result = await self._run(self._commit_sync, path, files, text, who)
        if result.created:
            self.push(workspace)
        return result

    async def read(self, workspace: str, sha: str | None = None) -> WorkspaceSnapshot:
        path = self._repo_path(workspace)
        wanted = None if sha is None else check_sha(sha)
        return await self._run(self._read_sync, path, workspace, wanted)

    async def history(self, workspace: str, limit: int = 50) -> list[CommitInfo]:
        path = self._repo_path(workspace)
        if limit < 1:
            raise BadRequest("The history limit must be at least 1.")
        return await self._run(self._history_sync, path, limit)

    async def check(self, workspace: str) -> str | None:
        try:
            path = self._repo_path(workspace)
            return await self._run(self._check_sync, path)
        except StateError as exc:
            return exc.message

    async def push_status(self, workspace: str) -> dict[str, Any]:
        path = self._repo_path(workspace)
        if self._push_template is None:
            return {"enabled": False}
        state = self._pushes.get(str(path))
        return (state or _PushState(self._push_url(path))).to_json()

    async def gc(self, workspace: str) -> None:
        path = self._repo_path(workspace)
        if not path.exists():
            return
        # git's own gc takes its gc.pid lock and is safe beside our writers: objects written
        # but not yet referenced are recent, and only old unreachable ones are pruned.
        try:
            code, output = await self._git(path, ["gc", "--quiet"], self._gc_timeout)
        except (TimeoutError, OSError) as exc:
            raise GitCommandFailed(f"git gc of workspace {workspace!r} failed: {exc!r}") from exc
        if code != 0:
            raise GitCommandFailed(f"git gc failed for workspace {workspace!r}: {output}")

    async def close(self) -> None:
        self._closed = True
        tasks = [s.task for s in self._pushes.values() if s.task and not s.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, True)

    # --- push -----------------------------------------------------------------------------

    def push(self, workspace: str) -> None:
        """Ask for a background push of the workspace's branch (no-op without a remote).

        Pushes of one workspace never overlap; commits during a push cause one more."""
        if self._push_template is None or self._closed:
            return
        path = self._repo_path(workspace)
        state = self._pushes.setdefault(str(path), _PushState(self._push_url(path)))
        state.wanted = True
        if state.task is None or state.task.done():
            state.task = asyncio.get_running_loop().create_task(self._push_loop(path, state))

    def _push_url(self, path: Path) -> str:
        assert self._push_template is not None
        return self._push_template.replace("{workspace}", path.name.removesuffix(".git"))

    async def _push_loop(self, path: Path, state: _PushState) -> None:
        try:
            while state.wanted:
                state.wanted = False
                await self._push_with_retries(path, state)
        except Exception as exc:  # a bug here must show in the status, not kill it silently
            log.exception("push loop of %s stopped", path.name)
            state.state, state.last_error = "failed", f"{type(exc).__name__}: {exc}"

    async def _push_with_retries(self, path: Path, state: _PushState) -> None:
        delay, delay_max = self._push_backoff
        for attempt in range(self._push_retries + 1):
            state.state, state.last_attempt_at = "pushing", _now()
            error = await self._push_once(path, state)
            if error is None:
                state.state, state.attempts, state.last_error = "ok", 0, None
                state.last_success_at, state.next_retry_at = _now(), None
                return
            state.attempts, state.last_error = state.attempts + 1, error
            if attempt == self._push_retries:
                break
            # Jitter keeps many workspaces that failed together from retrying together.
            pause = delay * random.uniform(0.8, 1.2)
            state.state, state.next_retry_at = "retrying", _now() + timedelta(seconds=pause)
            await asyncio.sleep(pause)
            delay = min(delay * 2, delay_max)
        state.state, state.next_retry_at = "failed", None
        log.warning("push of %s to %s failed: %s", path.name, _redact(state.url), state.last_error)

    async def _push_once(self, path: Path, state: _PushState) -> str | None:
        """None once the remote has the branch, else what went wrong."""
        try:
            head = await self._run(self._branch_value, path)
            refspec = f"{self._ref.decode()}:{self._ref.decode()}"
            code, output = await self._git(path, ["push", state.url, refspec], self._push_timeout)
        except StateError as exc:
            return exc.message
        except TimeoutError:
            return f"git push timed out after {self._push_timeout:.0f} s"
        except OSError as exc:  # git missing, out of processes...
            return f"git push could not start: {exc}"
        if code != 0:
            return _redact(output) or f"git push exited with {code}"
        state.pushed_sha = head
        return None

    async def _git(self, path: Path, args: list[str], timeout: float) -> tuple[int, str]:
        """Run `git --git-dir=path args`; (exit code, last lines of its output)."""
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")  # never wait for a prompt
        process = await asyncio.create_subprocess_exec(
            "git",
            f"--git-dir={path}",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), timeout)
        except (TimeoutError, asyncio.CancelledError):
            process.kill()
            await process.wait()
            raise
        lines = output.decode("utf-8", "replace").strip().splitlines()
        return process.returncode or 0, "\n".join(lines[-5:])

    # --- plumbing -------------------------------------------------------------------------

    def _repo_path(self, workspace: str) -> Path:
        return self._root / workspace_dir_name(workspace)

    def _lock(self, path: Path) -> asyncio.Lock:
        # Waiting here rather than on the thread lock keeps pool threads free for readers.
        return self._locks.setdefault(str(path), asyncio.Lock())

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise Unavailable("The snapshot repository is closed.")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    # --- writing (worker threads) -----------------------------------------------------------

    def _commit_sync(
        self, path: Path, files: dict[bytes, bytes], message: bytes, author: bytes
    ) -> CommitResult:
        with _path_lock(path), self._open(path, create=True) as repo:
            for _ in range(self._cas_attempts):
                try:
                    result = self._try_commit(repo, path, files, message, author)
                except OSError as exc:  # disk full, permissions: the caller may retry later
                    raise Unavailable(
                        f"The snapshot of {path.name} cannot be written: {exc}"
                    ) from exc
                if result is not None:
                    return result
                # Another process moved the branch (or holds its lock): rebuild on its head.
                time.sleep(random.uniform(0.001, 0.01))
        raise RepositoryBusy(f"The branch of {path.name} kept moving; try again later.")

    def _try_commit(
        self,
        repo: Repo,
        path: Path,
        files: dict[bytes, bytes],
        message: bytes,
        author: bytes,
    ) -> CommitResult | None:
        """The commit made on the current head, or None when the head moved under us."""
        parent = self._head_commit(repo)
        previous = self._load_head(repo, path, parent)
        entries = previous.blob_ids(files) if previous else _blob_ids(files)
        trees = _trees(entries)
        if previous is not None and trees[-1].id == previous.tree:
            return CommitResult(previous.commit.decode(), False, [])
        commit = self._new_commit(trees[-1].id, parent, message, author)
        stored = previous.stored if previous else set()
        # Only blobs the previous snapshot did not have are built and written.
        fresh = {
            blob_id: Blob.from_string(files[name])
            for name, blob_id in entries.items()
            if blob_id not in stored
        }
        _store(repo, [*fresh.values(), *trees, commit])
        if not self._swap(repo, parent, commit.id):
            return None
        self._remember(path, _Head(commit.id, trees[-1].id, entries, set(entries.values()), files))
        changed = _changed(previous.entries if previous else {}, entries)
        return CommitResult(commit.id.decode(), True, changed)

    def _load_head(self, repo: Repo, path: Path, commit_id: ObjectID | None) -> _Head | None:
        if commit_id is None:
            return None
        with self._heads_guard:
            cached = self._heads.get(str(path))
        if cached is not None and cached.commit == commit_id:
            return cached
        # Built by someone else (another process, or before a restart): only blobs that are
        # really there may be reused; a missing one is simply written again.
        commit = _get(repo, commit_id, Commit)
        entries = _panel_entries(repo, commit.tree)
        stored = {blob for blob in entries.values() if blob in repo.object_store}
        return _Head(commit_id, commit.tree, entries, stored)

    def _remember(self, path: Path, head: _Head) -> None:
        with self._heads_guard:
            self._heads[str(path)] = head
            self._heads.move_to_end(str(path))
            while len(self._heads) > self._cached_heads:
                self._heads.popitem(last=False)

    def _new_commit(
        self, tree: ObjectID, parent: ObjectID | None, message: bytes, author: bytes
    ) -> Commit:
        commit = Commit()
        commit.tree = tree
        commit.parents = [parent] if parent else []
        commit.author, commit.committer = author, self._committer
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.message = message
        return commit

    def _swap(self, repo: Repo, parent: ObjectID | None, new: ObjectID) -> bool:
        """Point the branch at `new` only if it still points at `parent` (compare-and-swap
        under the ref's lock file, the same lock git itself takes)."""
        log_args: dict[str, Any] = {"committer": self._committer, "message": b"snapshot"}
        try:
            if parent is None:
                return bool(repo.refs.add_if_new(self._ref, new, **log_args))
            return bool(repo.refs.set_if_equals(self._ref, parent, new, **log_args))
        except FileLocked:
            return False

    @contextlib.contextmanager
    def _open(self, path: Path, *, create: bool = False) -> Iterator[Repo]:
        if create and not path.exists():
            try:
                self._create(path)
            except OSError as exc:  # the folder cannot be made: disk, permissions
                raise Unavailable(f"The snapshot of {path.name} cannot be written: {exc}") from exc
        try:
            repo = Repo(str(path))
        except (NotGitRepository, OSError) as exc:
            raise RepositoryCorrupt(f"{path.name} is not a readable Git repository: {exc}") from exc
        try:
            self._check_head_file(path)
            yield repo
        finally:
            repo.close()  # dulwich keeps pack files open until closed

    def _create(self, path: Path) -> None:
        """Create the bare repository beside its final place and rename it there: a second
        writer (another process) either sees nothing or a complete repository."""
        self._root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self._root))
        try:
            os.chmod(staging, 0o755)
            branch = self._ref.removeprefix(b"refs/heads/")
            repo = Repo.init_bare(str(staging), default_branch=branch)
            config = repo.get_config()
            config.set((b"gc",), b"auto", b"0")  # gc runs on our schedule, never inside a write
            # Loose objects live until the next gc repacks them (at full compression); level
            # 1 makes the 50 KB tree of a 1,000-panel commit ~3x cheaper to write.
            config.set((b"core",), b"looseCompression", b"1")
            config.write_to_path()
            repo.close()
            with contextlib.suppress(OSError):  # lost the race: the other one is as good
                os.rename(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _check_head_file(self, path: Path) -> None:
        # git refuses a repository whose HEAD is garbled (push and gc would fail), so we do too.
        try:
            head = (path / "HEAD").read_bytes().strip()
        except OSError as exc:
            raise RepositoryCorrupt(f"{path.name}: HEAD cannot be read: {exc}") from exc
        if head != b"ref: " + self._ref:
            raise RepositoryCorrupt(f"{path.name}: HEAD is {head[:60]!r}, not a ref to the branch.")

    def _head_commit(self, repo: Repo) -> ObjectID | None:
        try:
            value = repo.refs.read_ref(self._ref)
        except _CORRUPTION as exc:
            raise RepositoryCorrupt(f"The branch ref cannot be read: {exc}") from exc
        if value is None:
            return None
        if not _HEX40.fullmatch(value):
            raise RepositoryCorrupt(f"The branch ref holds {value[:60]!r}, not a commit id.")
        return ObjectID(value)

    def _branch_value(self, path: Path) -> str | None:
        with self._open(path) as repo:
            head = self._head_commit(repo)
        return head.decode() if head else None

    # --- reading (worker threads) -----------------------------------------------------------

    def _read_sync(self, path: Path, workspace: str, sha: str | None) -> WorkspaceSnapshot:
        if not path.exists():
            if sha is None:
                return WorkspaceSnapshot(None, {}, None, None)
            raise _not_found(workspace, sha)
        with self._open(path) as repo:
            commit_id = self._head_commit(repo) if sha is None else _resolve(repo, workspace, sha)
            if commit_id is None:
                return WorkspaceSnapshot(None, {}, None, None)
            commit = _get(repo, commit_id, Commit)
            panels = {
                _panel_id(name): _get(repo, blob_id, Blob).data
                for name, blob_id in _panel_entries(repo, commit.tree).items()
            }
            return WorkspaceSnapshot(
                commit_id.decode(), panels, _committed_at(commit), _text(commit.message)
            )

    def _history_sync(self, path: Path, limit: int) -> list[CommitInfo]:
        if not path.exists():
            return []
        infos: list[CommitInfo] = []
        with self._open(path) as repo:
            commit_id = self._head_commit(repo)
            while commit_id is not None and len(infos) < limit:
                commit = _get(repo, commit_id, Commit)
                infos.append(_info(commit_id, commit))
                commit_id = commit.parents[0] if commit.parents else None
        return infos

    def _check_sync(self, path: Path) -> str | None:
        if not path.exists():
            return None
        try:
            _check_lock_file(path, self._ref)
            with self._open(path) as repo:
                return _check_head(repo, self._head_commit(repo))
        except StateError as exc:
            return exc.message
        except Exception as exc:  # a probe must answer, whatever the damage
            return f"{path.name}: {type(exc).__name__}: {exc}"


# --- object helpers ------------------------------------------------------------------------


def _panel_files(panels: Mapping[str, bytes]) -> dict[bytes, bytes]:
    files: dict[bytes, bytes] = {}
    for panel_id, data in panels.items():
        if not isinstance(data, bytes):
            raise BadRequest(f"Panel {panel_id!r}: canonical JSON bytes expected.")
        files[_file_name(panel_id)] = data
    return files


def _blob_id(data: bytes) -> ObjectID:
    # hashlib straight away: a dulwich Blob per unchanged panel costs more than the commit.
    digest = hashlib.sha1(b"blob %d\x00" % len(data))
    digest.update(data)
    return ObjectID(digest.hexdigest().encode("ascii"))


def _blob_ids(files: Mapping[bytes, bytes]) -> dict[bytes, ObjectID]:
    return {name: _blob_id(data) for name, data in files.items()}


@functools.lru_cache(maxsize=65536)
def _file_name(panel_id: str) -> bytes:
    # Cached: the full panel set is encoded on every commit, and ids repeat.
    return panel_file_name(panel_id).encode("ascii")


def _trees(entries: Mapping[bytes, ObjectID]) -> list[Tree]:
    """[panels tree, root tree], or [root tree] alone for a workspace without panels (Git
    has no empty folders)."""
    if not entries:
        return [_tree([])]
    panels = _tree([(name, BLOB_MODE, blob_id) for name, blob_id in entries.items()])
    return [panels, _tree([(PANELS, TREE_MODE, panels.id)])]


def _tree(items: list[tuple[bytes, int, ObjectID]]) -> Tree:
    """A tree serialized in one piece: a thousand `Tree.add` calls and the per-entry chunks
    they compress one by one cost more than the rest of a commit. Plain byte order is Git's
    order here because a tree holds either files only (panels/) or one folder (the root)."""
    raw = b"".join(
        b"%o %s\x00%s" % (mode, name, binascii.unhexlify(sha)) for name, mode, sha in sorted(items)
    )
    return cast(Tree, Tree.from_raw_string(Tree.type_num, raw))


def _store(repo: Repo, objects: list[ShaFile]) -> None:
    if len(objects) > PACK_THRESHOLD:
        repo.object_store.add_objects([(obj, None) for obj in objects])
        return
    for obj in objects:
        repo.object_store.add_object(obj)


def _get(repo: Repo, object_id: ObjectID, kind: type[ObjT]) -> ObjT:
    """The object, or RepositoryCorrupt: every id asked for here was reached from the branch."""
    try:
        obj = _fetch(repo, object_id)
    except KeyError as exc:
        raise RepositoryCorrupt(f"Object {object_id.decode()} is missing.") from exc
    except _CORRUPTION as exc:
        raise RepositoryCorrupt(f"Object {object_id.decode()} is damaged: {exc}") from exc
    if not isinstance(obj, kind):
        raise RepositoryCorrupt(
            f"Object {object_id.decode()} is a {obj.type_name.decode()}, "
            f"not a {kind.type_name.decode()}."
        )
    return obj


def _fetch(repo: Repo, object_id: ObjectID) -> ShaFile:
    try:
        return repo.object_store[object_id]
    except KeyError:
        # `git gc` may have packed the loose object between dulwich's two looks (packs, then
        # loose files); a second look rescans the packs.
        return repo.object_store[object_id]


def _panel_entries(repo: Repo, tree_id: ObjectID) -> dict[bytes, ObjectID]:
    root = _get(repo, tree_id, Tree)
    if PANELS not in root:
        return {}
    _, panels_id = root[PANELS]
    return {entry.path: entry.sha for entry in _get(repo, panels_id, Tree).iteritems()}


def _panel_id(name: bytes) -> str:
    try:
        return panel_id_from_file_name(name.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RepositoryCorrupt(f"{PANELS_DIR}/{name!r} is not a panel file.") from exc


def _changed(old: Mapping[bytes, ObjectID], new: Mapping[bytes, ObjectID]) -> list[str]:
    names = [name for name in old.keys() | new.keys() if old.get(name) != new.get(name)]
    return sorted(_panel_id(name) for name in names)


def _resolve(repo: Repo, workspace: str, sha: str) -> ObjectID:
    """The one commit `sha` (full or abbreviated) names in this repository."""
    raw = ObjectID(sha.encode("ascii"))
    if len(raw) == 40:
        candidates = [raw] if raw in repo.object_store else []
    else:
        candidates = list(repo.object_store.iter_prefix(raw))
    commits = [c for c in candidates if _get(repo, c, ShaFile).type_num == Commit.type_num]
    if not commits:
        raise _not_found(workspace, sha)
    if len(commits) > 1:
        raise AmbiguousSha(f"{sha} names {len(commits)} commits; give more digits.", sha=sha)
    return commits[0]


def _not_found(workspace: str, sha: str) -> CommitNotFound:
    return CommitNotFound(
        f"Workspace {workspace!r} has no snapshot {sha}.", workspace=workspace, sha=sha
    )


def _committed_at(commit: Commit) -> datetime:
    return datetime.fromtimestamp(commit.commit_time, UTC)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _info(commit_id: ObjectID, commit: Commit) -> CommitInfo:
    return CommitInfo(
        sha=commit_id.decode(),
        parents=[p.decode() for p in commit.parents],
        author=_text(commit.author),
        committed_at=_committed_at(commit),
        message=_text(commit.message),
    )


def _check_lock_file(path: Path, ref: Ref) -> None:
    # A writer that died while holding the ref's lock leaves it behind; git never removes
    # it by itself, and every later commit would fail.
    lock = path / (ref.decode() + ".lock")
    with contextlib.suppress(FileNotFoundError):
        age = time.time() - lock.stat().st_mtime
        if age > STALE_LOCK_SECONDS:
            raise RepositoryCorrupt(f"{path.name}: stale lock {lock.name} ({age:.0f} s old).")


def _check_head(repo: Repo, head: ObjectID | None) -> str | None:
    """What is wrong with the head snapshot, or None. Objects are checked for presence, not
    read: the probe stays cheap for a thousand panels (`git fsck` is the deep check)."""
    if head is None:
        return None
    commit = _get(repo, head, Commit)
    for name, blob_id in _panel_entries(repo, commit.tree).items():
        _panel_id(name)
        if blob_id not in repo.object_store:
            return f"The blob of {PANELS_DIR}/{name.decode()} ({blob_id.decode()}) is missing."
    missing = [p.decode() for p in commit.parents if p not in repo.object_store]
    return f"Parent commit {missing[0]} of the head is missing." if missing else None
