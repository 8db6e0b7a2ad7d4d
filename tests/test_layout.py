"""The package's shape: imports point one way (no cycles, no import from a higher layer), SQL
only in the store and the dashboard's data layer, no module over 400 lines, no sys.path edits.

Imports are read from the source (every `import` statement, at module level or inside a
function), so a lazy import counts like any other.
"""
import ast
import sys
from pathlib import Path

import pytest

from landscape_lib.locations import REPO_ROOT

PACKAGE = REPO_ROOT / "landscape_lib"

# Layers from the bottom up: a module may import from its own layer and those below it.
LAYERS = [
    ["errors", "locations"],
    ["registry"],
    ["params", "store"],
    ["data", "models", "inits", "optim"],
    ["config"],
    ["grid"],
    ["train"],
    ["analyses"],
    ["pipeline"],
    ["scale"],
    ["commands"],
    ["cli"],
    ["__main__"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}

# Where SQL may be written (and the tests, which query the store to check it).
SQL_HOMES = ("landscape_lib/store/", "dashboard/data/")
SQL = ("SELECT ", "INSERT INTO", "CREATE TABLE", "CREATE VIEW", "CREATE OR REPLACE",
       " WHERE ", "GROUP BY", "ORDER BY", "COPY (")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The landscape_lib (and dashboard) modules `path` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m.split(".")[0] in ("landscape_lib", "dashboard")}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1]] if len(parts) > 1 else -1  # the package itself: the bottom


def test_every_module_has_a_layer():
    assert not [m for m in modules() if m != "landscape_lib" and m.split(".")[1] not in LAYER]


def test_no_import_from_a_higher_layer():
    upward = [(m, dep) for m, deps in graph().items() for dep in deps
              if dep.startswith("dashboard") or layer(dep) > layer(m)]
    assert not upward, upward


def test_no_import_cycle():
    edges = graph()
    done, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in done:
            return
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            visit(dep)
        stack.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)
    assert not cycles, cycles


def test_the_import_walk_sees_lazy_and_relative_imports():
    edges = graph()
    assert "landscape_lib.store.queries" in edges["landscape_lib.analyses.context"]
    assert "landscape_lib.pipeline" in edges["landscape_lib.commands"]  # inside functions
    assert "landscape_lib.models" in edges["landscape_lib.config"]


def python_files(*exclude) -> list[Path]:
    import subprocess
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "--cached", "--others",
                             "--exclude-standard", "*.py"], capture_output=True, text=True)
    paths = [REPO_ROOT / line for line in listed.stdout.split()] if listed.returncode == 0 \
        else [p for p in REPO_ROOT.rglob("*.py") if ".venv" not in p.parts]
    return [p for p in paths if p.exists()
            and not str(p.relative_to(REPO_ROOT)).startswith(exclude)]


def strings(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_sql_only_in_the_store_and_the_dashboard_data_layer():
    found = [f"{path.relative_to(REPO_ROOT)}:{line}"
             for path in python_files("tests/", *SQL_HOMES)
             for line, text in strings(path) if any(word in text for word in SQL)]
    assert not found, found


def test_the_sql_scan_finds_sql():
    texts = [text for _, text in strings(PACKAGE / "store" / "queries.py")]
    assert any("SELECT " in t and " WHERE " in t for t in texts)


def test_no_module_over_400_lines():
    long = [(str(p.relative_to(REPO_ROOT)), n) for p in python_files()
            if (n := len(p.read_text().splitlines())) > 400]
    assert not long, long


def test_no_sys_path_edits():
    def edits(path):
        return any(isinstance(node, ast.Attribute) and node.attr == "path"
                   and isinstance(node.value, ast.Name) and node.value.id == "sys"
                   for node in ast.walk(ast.parse(path.read_text())))
    found = [str(p.relative_to(REPO_ROOT)) for p in python_files() if edits(p)]
    assert not found, found


@pytest.mark.parametrize("module", ["landscape_lib.analyses.registry",
                                    "landscape_lib.analyses.grid_stats.gaussfit",
                                    "landscape_lib.analyses.grid_stats.summary",
                                    "landscape_lib.store.queries"])
def test_light_modules_import_no_torch(module):
    import subprocess
    code = (f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'; "
            "from landscape_lib.analyses.registry import ANALYSES; print(len(ANALYSES))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""})
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) == 8  # every analysis registered, none of their code imported
