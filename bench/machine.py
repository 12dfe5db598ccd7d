"""What a result was measured on, and the per-process counters the workloads read (Linux /proc)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / ".bench"
# The checkout our server runs from (its `crdt_state` and `adapters`, with this venv): this one
# unless BENCH_OURS_SOURCE names another, e.g. a clone of an older commit for a before/after.
OURS_SOURCE = Path(os.environ.get("BENCH_OURS_SOURCE") or ROOT).resolve()
JS_DIR = ROOT / "bench" / "js"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True, frozen=True)
class ProcSample:
    """One reading of a process: CPU seconds so far (user + system), resident and peak memory."""

    cpu_seconds: float
    rss_bytes: int
    hwm_bytes: int


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds so far of a process (user + system, every thread, ended ones included).

    Read from the process's CPU-time clock (clock_getcpuclockid(3): the clock id of process
    `pid` is ``~pid << 3 | 2``), which counts nanoseconds. /proc/<pid>/stat counts scheduler
    ticks (10 ms here): over a phase of a few hundred requests or joins one tick is a step of
    several per cent. Falls back to the ticks where the clock cannot be read."""
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        pass
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def sample(pid: int) -> ProcSample:
    cpu = process_cpu_seconds(pid)
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return ProcSample(cpu, rss, hwm)


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of a process, by thread id (nanoseconds on CPU from
    /proc/<pid>/task/<tid>/schedstat, its first field)."""
    threads: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            threads[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except OSError:  # the thread ended meanwhile
            continue
    return threads


def sample_many(pids: list[int]) -> ProcSample:
    """The sum over several processes (a server with replicas)."""
    samples = [sample(pid) for pid in pids]
    return ProcSample(
        sum(s.cpu_seconds for s in samples),
        sum(s.rss_bytes for s in samples),
        sum(s.hwm_bytes for s in samples),
    )


def cpu_seconds_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far (user + system, all threads) of each process that still runs."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            out[pid] = process_cpu_seconds(pid)
        except OSError:  # it ended meanwhile
            continue
    return out


def processes() -> list[tuple[int, str, str]]:
    """(pid, command name, command line) of every process on the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry.name), comm, cmdline.strip()))
    return found


def redis_server_pids(port: int) -> list[int]:
    """The local redis-server listening on `port` (its process title is `redis-server
    host:port`); if none names the port and there is exactly one redis-server, that one."""
    servers = [(pid, cmdline) for pid, comm, cmdline in processes() if comm == "redis-server"]
    named = [pid for pid, cmdline in servers if cmdline.endswith(f":{port}")]
    if named:
        return named
    return [servers[0][0]] if len(servers) == 1 else []


# PostgreSQL's own processes that work for every database (a commit's WAL flush, checkpoints).
POSTGRES_SHARED = ("walwriter", "checkpointer", "background writer")


def postgres_pids(database: str) -> list[int]:
    """The PostgreSQL backends connected to `database` (their process title names it) and the
    server's shared writers (WAL writer, checkpointer, background writer)."""
    pids = []
    for pid, comm, cmdline in processes():
        if comm != "postgres" or not cmdline.startswith("postgres:"):
            continue
        words = cmdline.split()
        if database in words or cmdline.rstrip().endswith(POSTGRES_SHARED):
            pids.append(pid)
    return pids


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
    return busy / CLOCK_TICKS


def load_average() -> float:
    return os.getloadavg()[0]


def wait_for_quiet(limit_pct: float, max_wait: float, probe: float = 1.0) -> dict[str, float]:
    """Wait (at most `max_wait` s) until the machine's busy CPU over `probe` s is under
    `limit_pct` % of one core: other work on a shared machine skews the figures."""
    import time

    began = time.monotonic()
    while True:
        before = machine_busy_seconds()
        time.sleep(probe)
        busy_pct = 100.0 * (machine_busy_seconds() - before) / probe
        waited = time.monotonic() - began
        if busy_pct <= limit_pct or waited >= max_wait:
            return {"waited_s": waited, "busy_pct_before": busy_pct}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _output(args: list[str], cwd: Path = ROOT) -> str | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True, cwd=cwd).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "node": (_output(["node", "--version"]) or "").strip() or None,
    }


def node_package_versions(folder: Path, names: list[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        manifest = folder / "node_modules" / name / "package.json"
        try:
            versions[name] = json.loads(manifest.read_text())["version"]
        except (OSError, ValueError, KeyError):
            versions[name] = None
    return versions


def python_package_versions(names: list[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# What the bench itself writes: a change there is a result, not a change of the code measured.
GENERATED = ("bench/results/", "docs/BENCHMARKS")


def source_revision(source: Path = OURS_SOURCE) -> dict[str, Any]:
    commit = (_output(["git", "rev-parse", "HEAD"], source) or "").strip() or None
    status = _output(["git", "status", "--porcelain", "--untracked-files=no"], source)
    if status is None:
        return {"commit": commit, "dirty": None}
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    source = [path for path in changed if not path.startswith(GENERATED)]
    return {"commit": commit, "dirty": bool(source), "dirty_paths": source[:50]}


def our_versions() -> dict[str, Any]:
    return {
        "crdt-state": python_package_versions(["crdt-state"])["crdt-state"],
        **source_revision(),
        "python_packages": python_package_versions(
            ["pycrdt", "uvicorn", "websockets", "starlette"]
        ),
        "client_packages": node_package_versions(JS_DIR, CLIENT_PACKAGES),
        "python_executable": Path(sys.executable).name,
    }


CLIENT_PACKAGES = ["yjs", "y-websocket", "ws", "y-protocols", "lib0", "@hocuspocus/provider"]
