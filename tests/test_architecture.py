"""The shape of the house (docs/ARCHITECTURE.md), checked: the core never imports an adapter
and the lint says so, ports stay small, classes and modules stay readable, faces stand apart."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

from crdt_state import ports

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "crdt_state"
COMPOSITION_ROOT = {"app.py", "cli.py"}
MAX_CLASS_LINES = 300
MAX_MODULE_LINES = 450
# Modules allowed past MAX_MODULE_LINES, with why.
LONG_MODULES: dict[str, str] = {}
FACE_PLUMBING = {"http", "context", "__init__"}


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            dots = "." * node.level
            found.append((node.lineno, dots + (node.module or "")))
    return found


def test_the_lint_fails_when_the_core_imports_an_adapter() -> None:
    probe = "from adapters.sqlite import SqliteUpdateLog\n\nprint(SqliteUpdateLog)\n"
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run(
        [str(ruff), "check", "--stdin-filename", "crdt_state/probe.py", "-"],
        input=probe,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode != 0 and "TID251" in done.stdout
    allowed = subprocess.run(
        [str(ruff), "check", "--stdin-filename", "crdt_state/app.py", "-"],
        input=probe,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert "TID251" not in allowed.stdout  # the composition root may


def test_nothing_but_the_composition_root_imports_an_adapter() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in core_modules()
        if path.name not in COMPOSITION_ROOT or path.parent != CORE
        for line, name in imported_modules(path)
        if name == "adapters" or name.startswith("adapters.")
    ]
    assert offenders == []


def test_the_log_port_is_small() -> None:
    methods = [name for name, _ in inspect.getmembers(ports.UpdateLog) if not name.startswith("_")]
    assert len(methods) <= 6, methods


def test_classes_and_modules_stay_readable() -> None:
    too_long = []
    for path in core_modules():
        text = path.read_text()
        name = str(path.relative_to(ROOT))
        if text.count("\n") > MAX_MODULE_LINES and name not in LONG_MODULES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES:
                    too_long.append(f"{name}: class {node.name} has {lines} lines")
    assert too_long == []


def test_faces_do_not_import_each_other() -> None:
    faces = CORE / "faces"
    names = {path.stem for path in faces.glob("*.py")} - FACE_PLUMBING
    offenders = [
        f"faces/{path.name}:{line} imports {name}"
        for path in faces.glob("*.py")
        for line, name in imported_modules(path)
        # ".rest" is a sibling face; "..snapshots" is the core's snapshot service.
        if (name.startswith(".") and not name.startswith("..") and name[1:] in names)
        or name in {f"crdt_state.faces.{face}" for face in names}
    ]
    assert offenders == []


def test_the_core_below_the_faces_never_imports_a_face() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in core_modules()
        if path.parent == CORE and path.name not in COMPOSITION_ROOT
        for line, name in imported_modules(path)
        if name.startswith(".faces") or name.startswith("crdt_state.faces")
    ]
    assert offenders == []
