"""What ships: the wheel and the image.

The wheel is built from a clean checkout (`git archive HEAD`: what a fresh clone has, none of
the working tree's untracked or ignored files), installed into a fresh virtual environment, and
must hold every file of the three packages (the SQL migrations included). Then that
environment's own `crdt-state` migrates a fresh PostgreSQL database, serves on it with Redis,
answers /ready, and takes a write: nothing is borrowed from the project's venv or source tree.

CRDT_STATE_PACKAGE_FROM=worktree builds from the working tree instead (tracked and untracked
files, minus what .gitignore ignores), to check packaging changes before they are committed.

The image cannot be built here (no container daemon): the Dockerfile's facts are asserted, and
it is linted with hadolint (pyproject's `deploy` extra) when that is installed.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import redis_server
from .pg import create_database, drop_database, run_apart
from .server import free_port

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crdt_state", "adapters", "migrations")
SOURCE_VARIABLE = "CRDT_STATE_PACKAGE_FROM"
SECRET = "packaging-test-secret-of-at-least-32-bytes"
READY_SECONDS = 30.0
COMMAND_SECONDS = 180.0


@dataclass
class Installed:
    source: Path  # the clean tree the wheel was built from
    wheel: Path
    venv: Path
    timings: dict[str, float]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def site_packages(self) -> Path:
        [found] = self.venv.glob("lib/python3*/site-packages")
        return found

    def env(self, **extra: str) -> dict[str, str]:
        """A bare environment: this venv's bin first, no PYTHONPATH, nothing of the project's."""
        return {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/tmp"),
            "LANG": "C.UTF-8",
            **extra,
        }


def run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        check=False,
        **kwargs,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def clean_tree(destination: Path) -> None:
    """The files of a fresh clone (or, with CRDT_STATE_PACKAGE_FROM=worktree, of the working
    tree as it would be committed) into `destination`."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no clean tree to build from")
    mode = os.environ.get(SOURCE_VARIABLE, "head")
    if mode == "head":
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"],
            capture_output=True,
            check=True,
            timeout=COMMAND_SECONDS,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(destination, filter="data")
        return
    assert mode == "worktree", f"{SOURCE_VARIABLE} is 'head' or 'worktree', not {mode!r}"
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
        timeout=COMMAND_SECONDS,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        path = ROOT / name
        if path.is_file():  # a tracked file deleted in the working tree is not listed as such
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / name)


def package_files(tree: Path) -> set[str]:
    """Every file of the three packages, as paths relative to `tree` (bytecode aside)."""
    return {
        path.relative_to(tree).as_posix()
        for package in PACKAGES
        for path in (tree / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("packaging")
    source, dist, venv = base / "source", base / "dist", base / "venv"
    source.mkdir()
    timings: dict[str, float] = {}
    started = time.monotonic()
    clean_tree(source)
    timings["checkout"] = time.monotonic() - started

    started = time.monotonic()
    # The build backend's requirements (pyproject [build-system]) come from the index, as
    # they would for anyone building the project.
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, source])
    [wheel] = dist.glob("crdt_state-*.whl")
    timings["build"] = time.monotonic() - started

    started = time.monotonic()
    # A venv of the system's Python, not the project's; the project's pip installs into it
    # (`pip --python`), which spares bootstrapping a pip of its own. Dependencies come from
    # the index (pip's cache makes a second run quick).
    run([Path(sys.base_prefix) / "bin" / "python3", "-m", "venv", "--without-pip", venv])
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python"]
    run([*pip, "install", "--quiet", "--no-input", wheel])
    timings["install"] = time.monotonic() - started
    yield Installed(source, wheel, venv, timings)
    print(f"\npackaging timings: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}")


def test_the_wheel_holds_every_file_of_the_packages(installed: Installed) -> None:
    expected = package_files(installed.source)
    assert any(name.startswith("migrations/postgres/") for name in expected)
    assert any(name.startswith("migrations/sqlite/") for name in expected)
    assert "crdt_state/faces/health.py" in expected
    with zipfile.ZipFile(installed.wheel) as wheel:
        in_wheel = {name for name in wheel.namelist() if not name.startswith("crdt_state-")}
    assert sorted(expected - in_wheel) == [], "files of the checkout missing from the wheel"
    assert sorted(in_wheel - expected) == [], "files in the wheel that the checkout lacks"
    on_disk = package_files(installed.site_packages)
    assert sorted(expected - on_disk) == []
    assert (installed.bin / "crdt-state").is_file()


def test_the_installed_packages_are_the_venvs_own(installed: Installed, tmp_path: Path) -> None:
    script = (
        "import crdt_state, adapters, migrations\n"
        "from migrations import migration_files\n"
        "print(crdt_state.__file__, adapters.__file__, migrations.__file__, sep='\\n')\n"
        "print(len(migration_files('postgres')), len(migration_files('sqlite')))\n"
    )
    result = run([installed.bin / "python", "-c", script], env=installed.env(), cwd=tmp_path)
    *files, counts = result.stdout.split("\n")[:4]
    for file in files:
        assert Path(file).is_relative_to(installed.site_packages), file
    expected = [
        len(list((installed.source / "migrations" / dialect).glob("*.sql")))
        for dialect in ("postgres", "sqlite")
    ]
    assert [int(n) for n in counts.split()] == expected


def test_the_installed_server_migrates_serves_and_answers_ready(
    installed: Installed, tmp_path: Path
) -> None:
    if not redis_server.answers():
        pytest.fail(f"this test needs Redis at {redis_server.url()}")
    dsn = run_apart(create_database())
    try:
        env = installed.env(DATABASE_URL=dsn)
        migrated = run([installed.bin / "crdt-state", "migrate"], env=env, cwd=tmp_path)
        names = sorted(p.stem for p in (installed.source / "migrations/postgres").glob("*.sql"))
        assert migrated.stdout.split() == [word for name in names for word in ("applied", name)]
        again = run([installed.bin / "crdt-state", "migrate"], env=env, cwd=tmp_path)
        assert again.stdout.strip() == "schema is up to date"
        serve_and_write(installed, tmp_path, dsn)
    finally:
        run_apart(drop_database(dsn))


def serve_and_write(installed: Installed, tmp_path: Path, dsn: str) -> None:
    port = free_port()
    env = installed.env(
        DATABASE_URL=dsn,
        REDIS_URL=redis_server.url(),
        JWT_SECRET_KEY=SECRET,
        CRDT_STATE_DATA_DIR=str(tmp_path / "data"),
    )
    log_path = tmp_path / "serve.log"
    command = [installed.bin / "crdt-state", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        ready = wait_until_ready(base, process, log_path)
        assert ready["checks"] == {"database": "ok", "logWrites": "ok"}
        token = run(
            [
                installed.bin / "crdt-state",
                "token",
                "--sub",
                "packager",
                "--workspace",
                "pkg=write",
            ],
            env=env,
            cwd=tmp_path,
        ).stdout.strip()
        panel = f"p-{uuid.uuid4().hex[:8]}"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{base}/api/state/pkg", headers=headers, timeout=10) as api:
            written = api.put(f"/{panel}", json={"state": {"$state": {"from": "the wheel"}}})
            assert written.status_code in (200, 201), written.text
            read = api.get(f"/{panel}")
            assert read.status_code == 200, read.text
            assert read.json()["state"]["$state"] == {"from": "the wheel"}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
    # uvicorn ends a graceful stop by re-raising the signal it got.
    assert code in (0, -signal.SIGTERM), f"the server did not stop ({code}):\n{tail(log_path)}"
    assert "Application shutdown complete" in log_path.read_text(errors="replace")


def wait_until_ready(base: str, process: subprocess.Popen[bytes], log_path: Path) -> dict:
    deadline = time.monotonic() + READY_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the installed server exited ({process.returncode}):\n{tail(log_path)}")
        try:
            response = httpx.get(f"{base}/ready", timeout=2)
            if response.status_code == 200:
                return dict(response.json())
            last = f"{response.status_code} {response.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)  # polling a child process: there is no event to wait on
    pytest.fail(f"/ready did not answer 200 within {READY_SECONDS} s ({last}):\n{tail(log_path)}")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# The image. -----------------------------------------------------------------------------------

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|build-essential|make|python3-dev|libpq-dev|cargo)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuations joined

    def all(self, instruction: str) -> list[str]:
        return [args for kind, args in self.instructions if kind == instruction]


def dockerfile_stages() -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs and the stages, comments dropped, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        kind, _, args = line.partition(" ")
        kind = kind.upper()
        if kind == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name, []))
        elif not stages and kind == "ARG":
            key, _, value = args.partition("=")
            arguments[key] = value
        else:
            stages[-1].instructions.append((kind, args))
    return arguments, stages


def test_the_image_is_multi_stage_slim_and_non_root() -> None:
    arguments, stages = dockerfile_stages()
    assert len(stages) >= 2
    [build] = [stage for stage in stages if stage.name == "build"]
    final = stages[-1]
    for stage in stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: arguments[m[1]], stage.base)
        if stage.name == "inspector":  # the web inspector's bundle: Node, from its lock file
            assert re.fullmatch(r"node:\d+(\.\d+)*-slim", base), base
            assert any(run.startswith("npm ci") for run in stage.all("RUN"))
            continue
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", base), base
    # The final stage: the installed environment from the build stage, nothing else copied in.
    copies = final.all("COPY")
    assert copies and all(c.startswith(f"--from={build.name} ") for c in copies), copies
    assert not any(BUILD_TOOLS.search(run) for run in final.all("RUN")), "build tools installed"
    assert not any("pip install" in run for run in final.all("RUN"))
    [user] = final.all("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert final.all("EXPOSE") == ["8001"]
    [entrypoint] = final.all("ENTRYPOINT")
    assert entrypoint == '["crdt-state"]'
    [cmd] = final.all("CMD")
    assert cmd.startswith('["serve"') and '"0.0.0.0"' in cmd and '"8001"' in cmd
    [healthcheck] = final.all("HEALTHCHECK")
    assert "http://127.0.0.1:8001/health" in healthcheck
    # The build stage: the wheel is built and installed, tests are never in the context.
    assert any("pip wheel" in run and "pip install" in run for run in build.all("RUN"))
    for stage in stages:
        for copy in stage.all("COPY"):
            assert "tests" not in copy.split(), copy


def test_the_build_context_is_what_the_wheel_is_made_of() -> None:
    """.dockerignore is an allow-list, and the build stage copies nothing it leaves out."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "inspector", *PACKAGES}
    _, stages = dockerfile_stages()
    sources = {
        source.split("/")[0]
        for stage in stages[:-1]
        for copy in stage.all("COPY")
        if not copy.startswith("--from=")
        for source in copy.split()[:-1]
    }
    assert sources == allowed


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        found = shutil.which("hadolint")
        if found is None:
            pytest.skip("hadolint is not installed: `make chart-test` installs the deploy extra")
        hadolint = Path(found)
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
