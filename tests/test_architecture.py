"""The package's shape: no import cycles, and imports only in the allowed directions
(cli → jobs → training, inversion, reconstruction → networks → lifted → linalg; operators knows
no learning; nothing imports cli). Read from the source with ``ast``, lazy imports included."""
import ast
import pathlib
import sys

import lifted_inverse

ROOT = pathlib.Path(lifted_inverse.__file__).parent
PKG = "lifted_inverse"


def _modules() -> dict:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


MODULES = _modules()


def _targets(module: str, node) -> list:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        is_pkg = MODULES[module].name == "__init__.py"
        base = module if is_pkg else module.rsplit(".", 1)[0]
        if node.level:
            parts = base.split(".")
            base = ".".join(parts[:len(parts) - (node.level - 1)])
            mod = base + ("." + node.module if node.module else "")
        else:
            mod = node.module or ""
        names = [mod + "." + a.name if mod + "." + a.name in MODULES else mod for a in node.names]
    return [n for n in names if n in MODULES]


def _graph() -> dict:
    graph = {m: set() for m in MODULES}
    for m, f in MODULES.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(m, node):
                    own_submodule = t.startswith(m + ".") and f.name == "__init__.py"
                    if t != m and not own_submodule:
                        graph[m].add(t)
    return graph


def _cycles(graph: dict) -> list:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_imports_go_one_way():
    graph = _graph()
    forbidden = {
        "lifted": {"operators", "networks", "training", "inversion", "reconstruction", "datasets",
                   "jobs", "cli", "metrics", "plotting"},
        "operators": {"lifted", "networks", "training", "inversion", "jobs", "cli"},
        "networks": {"training", "inversion", "jobs", "cli"},
        "training": {"jobs", "cli"},
        "inversion": {"training", "jobs", "cli"},
        "reconstruction": {"training", "inversion", "lifted", "networks", "jobs", "cli"},
        "datasets": {"lifted", "networks", "training", "inversion", "jobs", "cli"},
        "jobs": {"cli"},
    }
    bad = [(m, t) for m, targets in graph.items() for t in targets
           if _area(t) in forbidden.get(_area(m), set())]
    assert bad == []


def _imported(module: str, node) -> list:
    """``(target module, imported name or None)`` per name of an import statement, for the
    package's own modules (``from a.b import c`` of a submodule ``a.b.c``: ``(a.b.c, None)``)."""
    if isinstance(node, ast.Import):
        return [(a.name, None) for a in node.names if a.name in MODULES]
    out = []
    for alias in node.names:
        one = ast.ImportFrom(module=node.module, names=[alias], level=node.level)
        for target in _targets(module, one):
            out.append((target, None if target.endswith("." + alias.name) else alias.name))
    return out


def test_cli_modules_only_parse_and_call_jobs():
    """``cli/*`` imports from the package only ``jobs.*`` and ``runtime`` (what a command calls)
    and, from elsewhere, UPPER_CASE constants (choices lists); no CLI module imports another."""
    allowed = ("lifted_inverse.jobs", "lifted_inverse.runtime")
    bad = []
    for m, f in MODULES.items():
        if _area(m) != "cli":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target, name in _imported(m, node):
                if target == allowed[1] or target == allowed[0] or target.startswith(allowed[0] + "."):
                    continue
                if _area(target) != "cli" and name is not None and name.isupper():
                    continue
                bad.append((m, target, name))
    assert bad == []
