"""The package's structure, read from the source with ``ast`` (nothing is imported).

Two rules of docs/style (and issue 19) that no behaviour test sees break:

- no import cycle between ``bridge`` modules: the serving side, the upstream
  side, the protocol modules and the WSGI core form layers, and a cycle is
  two layers that have grown into one.  An import inside a function counts
  (it is the same dependency, paid later); one under ``if TYPE_CHECKING:``
  does not (it never runs), nor does ``from bridge import __version__``: a
  package runs before any of its modules, so its metadata adds no dependency.
- no ``_private`` name of one module used by another: ``from bridge.x import
  _y``, or ``x._y`` / ``x.Class._y`` where ``x`` names a bridge module.  A
  private name another module needs is a missing public function.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "bridge"

#: Known private uses across modules, each ``(importing module, "module.name"
#: used)``, to be removed by its owner (the test below fails once one is gone
#: and its entry stays).  Empty: fastcgi/server.py's use of
#: ``ServerConnection._close_input`` became ``Request.close_input()``.
ALLOWED_PRIVATE_USES: set = set()


#: Known cycles, each a sorted list of modules, to be broken by their owner
#: (the stale-entry test below fails once a cycle is gone and its entry
#: stays).  Empty: config/configfile/loader/privileges became acyclic through
#: configbase.py and checkconfig.py, and warm_start.py no longer imports warm.
ALLOWED_CYCLES: list = []


def module_files() -> dict:
    """``{"bridge.x.y": Path}`` for every module of the package."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = module_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except what sits under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _private(name: str) -> bool:
    return name.startswith("_") and not _dunder(name)


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(module: str, tree: ast.AST) -> list:
    """``(imported bridge module, names taken from it, alias bound to a module or None)``."""
    found = []
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    # ``import bridge.x.y`` binds ``bridge``; ``... as z`` binds z to bridge.x.y.
                    found.append((alias.name, (), alias.asname))
                    if not alias.asname:
                        found.append((PACKAGE, (), PACKAGE))
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in MODULES:            # from bridge.x import submodule
                    found.append((sub, (), alias.asname or alias.name))
                elif source in MODULES and not _dunder(alias.name):
                    found.append((source, (alias.name,), None))
    return found


def parsed() -> dict:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def import_graph(trees: dict) -> dict:
    return {name: sorted({target for target, _, _ in imports_of(name, tree) if target != name})
            for name, tree in trees.items()}


def cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _dotted(node: ast.expr) -> list:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return []


def private_uses(module: str, tree: ast.AST) -> list:
    """``"bridge.x._y"`` strings for each private name of another module used here."""
    uses = []
    aliases = {}
    for target, names, bound in imports_of(module, tree):
        if target == module:
            continue
        uses.extend(f"{target}.{name}" for name in names if _private(name))
        if bound is not None:
            aliases[bound] = target
    for node in runtime_nodes(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain = _dotted(node)
        if not chain or chain[0] not in aliases:
            continue
        # ``import bridge.x.y`` binds ``bridge``: find the module the chain names.
        target = aliases[chain[0]]
        rest = chain[1:]
        while rest and f"{target}.{rest[0]}" in MODULES:
            target = f"{target}.{rest[0]}"
            rest = rest[1:]
        if target != module and any(_private(part) for part in rest):
            uses.append(".".join([target, *rest]))
    return sorted(set(uses))


# --------------------------------------------------------------------------
# the rules


def test_no_import_cycle_between_bridge_modules():
    found = [cycle for cycle in cycles(import_graph(parsed())) if cycle not in ALLOWED_CYCLES]
    assert found == [], "import cycles (module-level or inside functions):\n" + "\n".join(
        " <-> ".join(component) for component in found)


def test_no_module_uses_another_modules_private_names():
    found = []
    for module, tree in parsed().items():
        for use in private_uses(module, tree):
            if (module, use) not in ALLOWED_PRIVATE_USES:
                found.append(f"{module} uses {use}")
    assert found == [], "\n".join(found)


def test_the_cycle_allowlist_holds_only_cycles_that_still_exist():
    found = cycles(import_graph(parsed()))
    assert [cycle for cycle in ALLOWED_CYCLES if cycle not in found] == []


def test_the_allowlist_holds_only_violations_that_still_exist():
    trees = parsed()
    stale = [entry for entry in ALLOWED_PRIVATE_USES
             if entry[0] not in trees or entry[1] not in private_uses(entry[0], trees[entry[0]])]
    assert stale == [], f"fixed, remove from ALLOWED_PRIVATE_USES: {stale}"


# --------------------------------------------------------------------------
# the checker itself, on small made-up modules


def _graph_of(sources: dict) -> dict:
    saved = dict(MODULES)
    try:
        for name in sources:
            MODULES[name] = Path(name.replace(".", "/") + ".py")
        return import_graph({name: ast.parse(text) for name, text in sources.items()})
    finally:
        MODULES.clear()
        MODULES.update(saved)


def test_a_cycle_through_a_function_local_import_is_found():
    graph = _graph_of({
        "bridge.a": "from bridge.b import f\n",
        "bridge.b": "def f():\n    from bridge.c import g\n",
        "bridge.c": "import bridge.a\n",
    })
    assert cycles(graph) == [["bridge.a", "bridge.b", "bridge.c"]]


def test_an_import_under_type_checking_is_no_cycle():
    graph = _graph_of({
        "bridge.a": "from bridge.b import f\n",
        "bridge.b": "TYPE_CHECKING = False\nif TYPE_CHECKING:\n    from bridge.a import X\n",
    })
    assert cycles(graph) == []


def test_private_names_are_found_imported_or_through_a_module_alias():
    saved = dict(MODULES)
    try:
        for name in ("bridge.a", "bridge.pkg", "bridge.pkg.b"):
            MODULES[name] = Path(name.replace(".", "/") + ".py")
        source = ("from bridge.pkg.b import _helper, public\n"
                  "from bridge.pkg import b as codec\n"
                  "import bridge.pkg.b\n"
                  "codec.Conn._close(x)\n"
                  "bridge.pkg.b._pack()\n"
                  "codec.__name__\n"
                  "x._mine()\n")
        assert private_uses("bridge.a", ast.parse(source)) == [
            "bridge.pkg.b.Conn._close", "bridge.pkg.b._helper", "bridge.pkg.b._pack"]
    finally:
        MODULES.clear()
        MODULES.update(saved)


# --------------------------------------------------------------------------
# the grammar: one module, and no `re` until a regular expression is used


def test_the_grammar_compiles_its_regular_expressions_only_when_used():
    import subprocess
    import sys
    probe = ("import sys\n"
             "import bridge.abnf, bridge.httputil, bridge.lint, bridge.cgi.rfc3875\n"
             "before = 're' in sys.modules\n"
             "from bridge.abnf import HOST\n"
             "print(before, 're' in sys.modules, bool(HOST.fullmatch('[::1]:80')))\n")
    out = subprocess.run([sys.executable, "-S", "-c", probe], env={"PYTHONPATH": str(SRC)},
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.split() == ["False", "True", "True"]


def test_the_rules_are_written_once():
    trees = parsed()
    defined: dict = {}
    for module, tree in trees.items():
        for node in tree.body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            for name in names:
                if name in ("TCHAR", "HOP_BY_HOP", "http_date", "parse_http_date", "is_token"):
                    defined.setdefault(name, []).append(module)
    assert defined == {"TCHAR": ["bridge.tokens"], "HOP_BY_HOP": ["bridge.tokens"],
                       "is_token": ["bridge.tokens"], "http_date": ["bridge.abnf"],
                       "parse_http_date": ["bridge.abnf"]}


def test_the_import_paths_of_the_0_1_docs_still_work():
    import bridge
    from bridge.cgi import CGIApp
    from bridge.fastcgi.client import FastCGIApp
    from bridge.upstream import CGIApp as upstream_cgi, FastCGIApp as upstream_fastcgi
    from bridge.upstream.mount import Mount
    assert (CGIApp, FastCGIApp) == (upstream_cgi, upstream_fastcgi)
    assert isinstance(bridge.mount({"/": lambda environ, start_response: []}), Mount)


def test_no_two_test_modules_share_a_basename():
    """The README's command collects tests/unit and tests/integration in one run:
    two ``test_x.py`` in different folders (no packages) fail at collection."""
    tests = Path(__file__).resolve().parents[1]
    seen: dict = {}
    for path in sorted(tests.rglob("test_*.py")):
        if "benchmarks" in path.parts:
            continue
        seen.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
