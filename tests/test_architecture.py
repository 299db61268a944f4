"""The layout keeps its rules (ARCHITECTURE.md): no import cycle, no private name across modules, no engine base
class, `seedbed --help` without torch or numpy, and ARCHITECTURE.md naming exactly the packages that exist."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "seedbed"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported seedbed module, names taken from it) for every import in the file, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "seedbed"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "seedbed":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub, []) if sub in known else (node.module, [alias.name]))
    return found


def test_no_import_cycle():
    known = modules()
    graph = {name: {m for m, _ in imports(path, known) if m in known and m != name} for name, path in known.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other are reported."""
    pkg = tmp_path / "seedbed"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from seedbed.b import g\n")
    (pkg / "b.py").write_text("from seedbed.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    try:
        test_no_import_cycle()
    except AssertionError as e:
        assert "seedbed.a -> seedbed.b -> seedbed.a" in str(e)
    else:
        raise AssertionError("a planted cycle was not found")


def test_no_private_name_crosses_modules():
    known = modules()
    crossing = [f"{module_name(path)} imports {name} from {source}"
                for path in known.values() for source, names in imports(path, known) for name in names
                if name.startswith("_") and not name.startswith("__")]
    assert not crossing, "\n".join(crossing)


def test_no_abstract_base_classes():
    """Engines and backends compose (a Protocol), never inherit an implementation (STYLE.md)."""
    users = [str(p.relative_to(SRC)) for p in PACKAGE.rglob("*.py") if re.search(r"^\s*(from abc|import abc)", p.read_text(), re.M)]
    assert not users, users


def test_help_imports_neither_torch_nor_numpy():
    code = ("import sys\nfrom seedbed.cli import app\n"
            "for argv in (['--help'], ['data', 'prepare', '--help'], ['finetune', '--help'], ['serve', '--help']):\n"
            "    try:\n        app(argv)\n    except SystemExit as e:\n        assert e.code == 0, argv\n"
            "heavy = [m for m in ('torch', 'numpy', 'transformers', 'datasets') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200",
                          "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--quality.min-words" in done.stdout and "--lora-r" in done.stdout


def test_architecture_md_names_every_package_and_only_those():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    packages = {p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    named = set(re.findall(r"^\| `([a-z_/]+)/` \|", text, re.M))
    assert named == packages, f"missing from ARCHITECTURE.md: {packages - named}; not in the tree: {named - packages}"
    top_modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    named_modules = set(re.findall(r"^\| `([a-z0-9_]+)\.py` \|", text, re.M))
    assert named_modules == top_modules, (top_modules - named_modules, named_modules - top_modules)
