"""The shape of the whole repository (issue 30), checked on syntax trees and files: every tree has one
job and the arrows between trees point one way (the package imports none of them, tests import no
other tree, nothing imports tests), no import cycle in any tree, no sys.path edits, no private name
of the package used outside it and its tests, the size caps on every Python tree, no library
function with more than 8 parameters unless its options are keyword-only, `python -m benchmarks
--list` lists exactly the suites, and every README beside a results/ folder names exactly its files.
Each check is shown to fail on an input made to break it."""

import ast
import re
import subprocess
import sys
from pathlib import Path

from test_architecture import MAX_FUNCTION_LINES, MAX_MODULE_LINES, find_cycle, long_functions

ROOT = Path(__file__).resolve().parents[2]
TREES = ("dlsr_deploy", "benchmarks", "research", "tools", "tests")
MAX_PARAMS = 8
MAX_POSITIONAL_OF_ENTRY_POINT = 5


def tree_files(tree: str):
    """The Python files of one tree (no caches)."""
    return sorted(p for p in (ROOT / tree).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _bare_test_modules() -> dict:
    """tests' helper modules are imported by bare name from beside the test (pytest puts a test's
    folder and tests/ on the path): name -> dotted module."""
    return {p.stem: module_name(p) for p in tree_files("tests")}


def imported(path: Path, bare: dict = None):
    """Every module a file imports, relative imports resolved; for `from x import y` also x.y."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            yield (bare or {}).get(n, n)


def repository_graph() -> dict:
    """module -> the repository's modules it imports (every tree; tests' bare names resolved)."""
    bare = _bare_test_modules()
    files = {module_name(f): f for t in TREES for f in tree_files(t)}
    graph = {}
    for name, f in files.items():
        edges = imported(f, bare if name.startswith("tests") else None)
        # a module importing its own package's __init__ (re-exports) is not a cycle of ideas
        graph[name] = sorted({m for m in edges if m in files and m != name and not name.startswith(m + ".")})
    return graph


def test_no_import_cycle_in_any_tree():
    cycle = find_cycle(repository_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def _tree_of(module: str) -> str:
    return module.split(".")[0]


def test_the_trees_point_one_way():
    """The package imports no other tree; tests import no other tree; nothing imports tests."""
    bad = []
    for name, edges in repository_graph().items():
        for m in edges:
            src, dst = _tree_of(name), _tree_of(m)
            if src == "dlsr_deploy" and dst != "dlsr_deploy":
                bad.append(f"the package's {name} imports {m}")
            if src == "tests" and dst not in ("tests", "dlsr_deploy"):
                bad.append(f"the test module {name} imports {m}")
            if dst == "tests" and src != "tests":
                bad.append(f"{name} imports the test module {m}")
    assert not bad, "\n".join(bad)


def test_no_tracked_file_edits_sys_path():
    needle = "sys.path." + "insert"
    bad = [str(f.relative_to(ROOT)) for t in TREES for f in tree_files(t) if needle in f.read_text()]
    assert not bad, f"{needle} in: {bad}"


def private_imports(path: Path):
    """`from dlsr_deploy... import _name` or a `_module` of the package, in one file."""
    for node in ast.walk(ast.parse(path.read_text())):
        mods, names = [], []
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlsr_deploy"):
            mods, names = [node.module], [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names if a.name.startswith("dlsr_deploy")]
        for n in names + [p for m in mods for p in m.split(".")]:
            if n.startswith("_") and not n.startswith("__"):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {n}"


def test_nothing_outside_the_package_and_tests_uses_its_private_names():
    bad = [x for t in ("benchmarks", "research", "tools") for f in tree_files(t) for x in private_imports(f)]
    assert not bad, "private names of the package used outside it:\n" + "\n".join(bad)


def test_the_package_points_to_no_result_file_of_benchmarks():
    bad = [
        f"{f.relative_to(ROOT)}:{i}"
        for f in tree_files("dlsr_deploy")
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if "benchmarks/results" in line
    ]
    assert not bad, "the package names benchmarks/results (point to a README instead):\n" + "\n".join(bad)


def test_size_caps_on_every_tree():
    files = [f for t in TREES for f in tree_files(t)]
    long_mods = [
        f"{f.relative_to(ROOT)} ({n})" for f in files if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    long_funcs = [x for f in files for x in long_functions(f, MAX_FUNCTION_LINES)]
    assert not long_mods, "modules over 450 lines:\n" + "\n".join(long_mods)
    assert not long_funcs, "functions over 60 lines:\n" + "\n".join(long_funcs)


def wide_functions(path: Path):
    """Functions with more than 8 parameters, unless public with at most 5 positional ones (the
    rest keyword-only options: an entry point)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        pos = [x for x in a.posonlyargs + a.args if x.arg not in ("self", "cls")]
        if len(pos) + len(a.kwonlyargs) <= MAX_PARAMS:
            continue
        entry = not node.name.startswith("_") or node.name == "__init__"
        if not (entry and len(pos) <= MAX_POSITIONAL_OF_ENTRY_POINT):
            yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({len(pos)} positional, {len(a.kwonlyargs)} kw)"


def test_no_library_function_takes_more_than_8_parameters():
    # click commands are the CLI's entry points: one parameter per option, by design
    files = [f for f in tree_files("dlsr_deploy") if "cli" not in f.relative_to(ROOT).parts]
    bad = [x for f in files for x in wide_functions(f)]
    assert not bad, (
        "functions over 8 parameters (make the options keyword-only, or give the state a type):\n" + "\n".join(bad)
    )


def quiet_or_stderr(path: Path):
    """A `quiet` parameter or dataclass field, or a direct use of sys.stderr, in one file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            if any(x.arg == "quiet" for x in a.posonlyargs + a.args + a.kwonlyargs):
                yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(quiet)"
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "quiet":
            yield f"{path.relative_to(ROOT)}:{node.lineno} field quiet"
        elif isinstance(node, ast.Attribute) and node.attr == "stderr" and getattr(node.value, "id", "") == "sys":
            yield f"{path.relative_to(ROOT)}:{node.lineno} sys.stderr"


def test_quiet_and_stderr_belong_to_the_cli():
    """One logger (dlsr_deploy.log): only cli/ turns --quiet / --verbose into levels and writes to stderr."""
    files = [f for f in tree_files("dlsr_deploy") if "cli" not in f.relative_to(ROOT).parts]
    bad = [x for f in files for x in quiet_or_stderr(f)]
    assert not bad, "quiet / sys.stderr outside cli/:\n" + "\n".join(bad)


def test_benchmarks_list_names_exactly_the_suites():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    suites = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in ("__init__", "__main__", "harness")}
    scripts = {"cpu": "bench_cpu.sh", "peers": "peers.sh"}
    assert {p.name for p in (ROOT / "benchmarks").glob("*.sh")} == set(scripts.values())
    assert listed == suites | set(scripts), f"listed {sorted(listed)}, suites {sorted(suites | set(scripts))}"


def results_named(readme: Path) -> set:
    """The files a README's '## Result files' section names (`results/NAME`)."""
    text = readme.read_text()
    section = text.split("\n## Result files\n", 1)
    assert len(section) == 2, f"{readme.relative_to(ROOT)} has no '## Result files' section"
    return set(re.findall(r"`results/([^`/]+)`", section[1].split("\n## ", 1)[0]))


def test_every_results_folder_is_named_by_its_readme():
    folders = sorted(p.parent for p in ROOT.glob("**/results") if p.is_dir() and ".venv" not in p.parts)
    folders = [d for d in folders if d.relative_to(ROOT).parts[0] in TREES]
    assert ROOT / "benchmarks" in folders and any("research" in d.parts for d in folders)
    for d in folders:
        present = {p.name for p in (d / "results").iterdir() if not p.name.endswith((".npz", ".npy"))}
        named = results_named(d / "README.md")
        where = d.relative_to(ROOT)
        assert not named - present, f"{where}/README.md names files that do not exist: {sorted(named - present)}"
        assert not present - named, f"{where}/README.md does not name: {sorted(present - named)}"


def test_the_repository_checks_can_fail(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("from dlsr_deploy.pipeline import _split\nimport dlsr_deploy._hidden\n")
    assert len(list(private_imports_at(f))) == 2
    f.write_text("def f(a, b, c, d, e, g, h, i, j):\n    pass\n\ndef g(a, *, b, c, d, e, f, h, i, j):\n    pass\n")
    assert [w.split()[1] for w in wide_functions_at(f)] == ["f"]
    f.write_text("import sys\ndef f(x, quiet=False):\n    print(x, file=sys.stderr)\n")
    assert len(list(quiet_or_stderr_at(f))) == 2
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n## Result files\n\n- `results/a.md`, `results/b.json`: things.\n\n## Next\n`results/c.md`\n"
    )
    assert results_named(readme) == {"a.md", "b.json"}
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


def _outside_repo(check, path: Path):
    """check(path) as a list, for a file outside the repository (the self-tests): ROOT moved to its folder."""
    global ROOT
    old, ROOT = ROOT, path.parent
    try:
        return list(check(path))
    finally:
        ROOT = old


def private_imports_at(path: Path):
    """private_imports for a file outside the repository (the self-test)."""
    return _outside_repo(private_imports, path)


def wide_functions_at(path: Path):
    """wide_functions for a file outside the repository (the self-test)."""
    return _outside_repo(wide_functions, path)


def quiet_or_stderr_at(path: Path):
    """quiet_or_stderr for a file outside the repository (the self-test)."""
    return _outside_repo(quiet_or_stderr, path)
