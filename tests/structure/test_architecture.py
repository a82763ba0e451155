"""The shape of the code (issue 20), checked on its syntax tree: no import cycle between the
package's modules, no function over 60 lines (package and benchmarks), no module over 450 lines
in dlsr_deploy/. Each check is shown to fail on a file made to break it."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "dlsr_deploy"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 450


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """Modules of the package a file imports (at any depth: lazy imports count too), and for
    `from package import module` the module itself."""
    from test_boundaries import _imports as imported_modules

    yield from imported_modules(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield from (f"{node.module}.{a.name}" for a in node.names)


def import_graph(files) -> dict:
    mods = {_module_name(f): f for f in files}
    graph = {}
    for name, f in mods.items():
        graph[name] = sorted({m for m in _imports(f) if m in mods and m != name})
    return graph


def find_cycle(graph: dict):
    """One import cycle as a list of modules, or None (iterative DFS, white/grey/black)."""
    state = {}
    for start in graph:
        if state.get(start):
            continue
        stack = [(start, iter(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(graph.get(nxt, []))))
                path.append(nxt)
    return None


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES):
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    return out


def _package_files():
    return sorted(PKG.rglob("*.py"))


def test_no_import_cycle():
    graph = import_graph(_package_files())
    # submodule imports through a package __init__ are not cycles of ideas: a package re-exporting
    # its own modules (dlsr_deploy.manifest, dlsr_deploy.cli) is skipped as an edge target of them
    for name in list(graph):
        graph[name] = [m for m in graph[name] if not name.startswith(m + ".")]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_function_over_60_lines():
    files = _package_files() + sorted((ROOT / "benchmarks").glob("*.py"))
    bad = [x for f in files for x in long_functions(f)]
    assert not bad, "functions over 60 lines:\n" + "\n".join(bad)


def test_no_module_over_450_lines():
    bad = [
        f"{f.relative_to(ROOT)} ({n} lines)"
        for f in _package_files()
        if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not bad, "modules over 450 lines:\n" + "\n".join(bad)


def test_the_checks_can_fail(tmp_path):
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": []}) is None
    f = ROOT / "tests" / "_long_tmp.py"
    try:
        f.write_text("def f():\n" + "    x = 1\n" * 70)
        assert long_functions(f) and "f (71 lines)" in long_functions(f)[0]
    finally:
        f.unlink()


@pytest.mark.parametrize("module", ["dlsr_deploy.manifest", "dlsr_deploy.parity"])
def test_manifest_and_parity_do_not_import_each_other_at_module_level(module):
    graph = import_graph(_package_files())
    other = "dlsr_deploy.parity" if module == "dlsr_deploy.manifest" else "dlsr_deploy.manifest"
    reach = set()
    todo = [m for m in graph if m == module or m.startswith(module + ".")]
    while todo:
        m = todo.pop()
        for n in graph.get(m, []):
            if n not in reach:
                reach.add(n)
                todo.append(n)
    assert not (other in reach and module in {r for m in graph if m.startswith(other) for r in graph[m]})
