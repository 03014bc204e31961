"""The package's import graph: no cycles (function-local imports included), and no library module imports an
entry point (`seal_jax.cli`). The checker is tested on small synthetic graphs too, so it can fail."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "seal_jax"


def module_name(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def imported_modules(source: str, name: str, is_package: bool, known: set) -> set:
    """Every `seal_jax` module `source` imports, at any depth of the file (function-local imports too).

    `from a.b import c` counts as a.b.c when that is a module, else as a.b; relative imports are resolved."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import seal_jax.a.b` names seal_jax.a.b; `x.y` of a module: x
                target = target.rpartition(".")[0]
            if target.split(".")[0] == PACKAGE and target != name:
                out.add(target)
    return out


def package_graph(root: str = ROOT) -> dict:
    """{module: set of seal_jax modules it imports} for every .py file under root/seal_jax."""
    files = {}
    for dirpath, _, names in os.walk(os.path.join(root, PACKAGE)):
        for n in names:
            if n.endswith(".py"):
                path = os.path.join(dirpath, n)
                files[module_name(path, root)] = path
    known = set(files)
    return {m: imported_modules(open(p, encoding="utf-8").read(), m, p.endswith("__init__.py"), known)
            for m, p in files.items()}


def find_cycle(graph: dict):
    """One import cycle as [a, b, ..., a], or None. Importing a module imports its parent packages first, so a
    parent package's imports are followed from it (edges to a module's own ancestors are not cycles)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if m.startswith(n + "."):
                continue
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def library_imports_of_entry_points(graph: dict) -> list:
    """(library module, cli module) pairs: code outside seal_jax.cli importing an entry point."""
    cli = f"{PACKAGE}.cli"
    is_cli = lambda m: m == cli or m.startswith(cli + ".")
    return sorted((m, n) for m, deps in graph.items() if not is_cli(m) for n in deps if is_cli(n))


def test_checker_finds_cycles_local_imports_and_entry_points(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from seal_jax.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from seal_jax import c  # hidden in a function\n")
    (pkg / "c.py").write_text("import seal_jax.a\n")
    (pkg / "d.py").write_text("from .cli.train import main\n")
    (pkg / "cli" / "train.py").write_text("from seal_jax import d\nfrom seal_jax.a import f\n")
    graph = package_graph(str(tmp_path))
    assert graph["seal_jax.b"] == {"seal_jax.c"} and graph["seal_jax.d"] == {"seal_jax.cli.train"}
    assert find_cycle(graph) == ["seal_jax.a", "seal_jax.b", "seal_jax.c", "seal_jax.a"]
    assert library_imports_of_entry_points(graph) == [("seal_jax.d", "seal_jax.cli.train")]
    (pkg / "c.py").write_text("import jax\n")
    (pkg / "d.py").write_text("from seal_jax import a\n")
    graph = package_graph(str(tmp_path))
    assert find_cycle(graph) is None and library_imports_of_entry_points(graph) == []


def test_package_has_no_import_cycles():
    graph = package_graph()
    assert len(graph) > 30 and "seal_jax.engine.adapt" in graph["seal_jax.domains.knowledge.updates"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_library_never_imports_an_entry_point():
    assert library_imports_of_entry_points(package_graph()) == []


@pytest.mark.parametrize("layer, below", [
    ("seal_jax.engine", ("seal_jax.domains", "seal_jax.rl")),
    ("seal_jax.domains", ("seal_jax.rl",)),
    ("seal_jax.runtime", ("seal_jax.engine", "seal_jax.domains", "seal_jax.rl")),
])
def test_layers_import_only_downwards(layer, below):
    """The engine knows no domain and no driver; domains know no driver; runtime knows none of them."""
    graph = package_graph()
    wrong = sorted((m, n) for m, deps in graph.items() if m.startswith(layer) for n in deps if n.startswith(below))
    assert wrong == []
