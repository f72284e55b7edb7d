"""The package's layers (docs/design.md, "Layers of the code"): every module of mgdet imports
only from its own package or from a lower stage, and no modules import each other in a cycle;
every ``from mgdet... import name`` of the package, the tests, bench/ and tools/ names a module
or a name that module defines. Parsed with ``ast`` (nothing is imported), function-local
imports included."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Stages from the bottom up; a module's stage is that of its longest listed prefix. A module
# may import its own package (mgdet.<package>) and any lower stage, nothing above and no peer
# of its stage. mgdet.viz.drawing (PIL only) sits low: training's TensorBoard pictures and
# predict draw with it, while mgdet.viz.show_assign is a command at the top.
STAGES = (
    ("mgdet.config",),
    ("mgdet.ops", "mgdet.viz.drawing"),
    ("mgdet.assign",),
    ("mgdet.losses",),
    ("mgdet.models", "mgdet.data"),
    ("mgdet.evaluation",),
    ("mgdet.training",),
    ("mgdet.export", "mgdet.inference", "mgdet.viz", "mgdet.convert", "mgdet.keras_hub"),
    ("mgdet.api",),
    ("mgdet.cli",),
    ("mgdet",),  # the package's __init__: re-exports mgdet.api
)


def module_name(path, root=ROOT):
    """``mgdet/a/b.py`` -> ``mgdet.a.b``; ``mgdet/a/__init__.py`` -> ``mgdet.a``."""
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root=ROOT):
    """``{module name: source path}`` of every module of the mgdet package."""
    found = {}
    for folder, dirs, files in os.walk(os.path.join(root, "mgdet")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[module_name(path, root)] = path
    return found


def imported(path, name, modules):
    """The mgdet modules that the module ``name`` (file ``path``) imports, each a known module
    (``from mgdet.a import b`` names ``mgdet.a.b`` when that is a module, else ``mgdet.a``)."""
    is_package = path.endswith("__init__.py")
    out = set()
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[:len(name.split(".")) - node.level + is_package]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target.startswith("mgdet"):
                out.add(target)
    return out


def stage_of(module, stages=STAGES):
    """``(stage index, prefix)`` of the longest prefix of ``module`` in ``stages`` (the root
    ``mgdet`` names the package's ``__init__`` only)."""
    found = [(len(prefix), index, prefix) for index, prefixes in enumerate(stages)
             for prefix in prefixes
             if module == prefix or (prefix != "mgdet" and module.startswith(prefix + "."))]
    if not found:
        raise AssertionError(f"{module} is in no stage of STAGES: add its package there")
    _, index, prefix = max(found)
    return index, prefix


def upward_imports(graph, stages=STAGES):
    """``"a -> b"`` for every import of ``graph`` ({module: imported modules}) that is neither
    of the module's own package (its stage prefix) nor of a lower stage."""
    bad = []
    for module, targets in sorted(graph.items()):
        stage, prefix = stage_of(module, stages)
        for target in sorted(targets):
            target_stage, target_prefix = stage_of(target, stages)
            if target_prefix != prefix and target_stage >= stage:
                bad.append(f"{module} (stage {stage}) -> {target} (stage {target_stage})")
    return bad


def cycles(graph):
    """The import cycles of ``graph`` (each a list of modules, the first repeated last)."""
    found, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target == module or target not in graph:
                continue
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def import_graph(root=ROOT):
    modules = package_modules(root)
    graph = {}
    for name, path in modules.items():
        # a package imports its own __init__ implicitly: that edge is no dependency
        graph[name] = {t for t in imported(path, name, modules) if t != name}
    return graph


def test_imports_run_only_downward():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_every_module_is_in_a_stage():
    for module in import_graph():
        stage_of(module)


@pytest.mark.parametrize("plant,found", [
    # a model importing the training package (what models/detector.py did with distributed)
    ("mgdet/models/planted.py", "from mgdet.training import distributed\n"),
    # config importing data (what config.py did)
    ("mgdet/config/planted.py", "def f():\n    from mgdet.data import SOURCES\n"),
    # a peer of the same stage
    ("mgdet/data/planted.py", "import mgdet.models.build\n"),
])
def test_a_planted_upward_import_is_found(tmp_path, plant, found):
    copy = _copy_package(tmp_path)
    with open(os.path.join(copy, plant), "w") as f:
        f.write(found)
    bad = upward_imports(import_graph(copy))
    assert len(bad) == 1 and module_name(os.path.join(copy, plant), copy) in bad[0]


def test_a_planted_cycle_is_found(tmp_path):
    copy = _copy_package(tmp_path)
    with open(os.path.join(copy, "mgdet/ops/planted_a.py"), "w") as f:
        f.write("from mgdet.ops import planted_b\n")
    with open(os.path.join(copy, "mgdet/ops/planted_b.py"), "w") as f:
        f.write("from mgdet.ops.planted_a import x\n")
    assert cycles(import_graph(copy)) == [["mgdet.ops.planted_a", "mgdet.ops.planted_b",
                                           "mgdet.ops.planted_a"]]


def test_relative_imports_resolve(tmp_path):
    copy = _copy_package(tmp_path)
    with open(os.path.join(copy, "mgdet/ops/planted.py"), "w") as f:
        f.write("from ..training import loop\n")
    assert any("mgdet.ops.planted" in line and "mgdet.training.loop" in line
               for line in upward_imports(import_graph(copy)))


def _copy_package(tmp_path):
    """A copy of the package's sources under ``tmp_path`` (only .py files)."""
    for name, path in package_modules().items():
        target = tmp_path / os.path.relpath(path, ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(path, encoding="utf-8") as f:
            target.write_text(f.read(), encoding="utf-8")
    return str(tmp_path)


def top_level_names(path):
    """The names a module defines at its top level (functions, classes, assignments, imports,
    also inside top-level ``if`` / ``try`` / ``with`` blocks), parsed with ``ast``."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names, pending = set(), list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            pending += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            pending += [n for h in getattr(node, "handlers", []) for n in h.body]
    return names


def unresolved_imports(paths, root=ROOT):
    """``"file:line: from mgdet.a import x"`` for every ``from mgdet... import name`` (function
    -local ones too) of ``paths`` whose module does not exist or neither defines ``name`` at its
    top level nor has a submodule ``name``."""
    modules = package_modules(root)
    defined = {}
    bad = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and not node.level and node.module
                    and node.module.split(".")[0] == "mgdet"):
                continue
            for alias in node.names:
                where = f"{os.path.relpath(path, root)}:{node.lineno}: from {node.module} import"
                if node.module not in modules:
                    bad.append(f"{where} {alias.name} (no module {node.module})")
                    continue
                if node.module not in defined:
                    defined[node.module] = top_level_names(modules[node.module])
                if (alias.name not in defined[node.module]
                        and f"{node.module}.{alias.name}" not in modules):
                    bad.append(f"{where} {alias.name}")
    return bad


def _python_files(root=ROOT):
    paths = [os.path.join(root, "cli.py")]
    for top in ("mgdet", "bench", "tests", "tools"):
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            paths += [os.path.join(folder, n) for n in sorted(files) if n.endswith(".py")]
    return [p for p in paths if os.path.isfile(p)]


def test_every_import_of_an_mgdet_name_resolves():
    # bench/'s scripts run by hand only: an import of a name that moved is found here
    assert unresolved_imports(_python_files()) == []


def test_a_planted_import_of_a_moved_name_is_found(tmp_path):
    copy = _copy_package(tmp_path)
    script = os.path.join(copy, "bench_planted.py")
    with open(script, "w") as f:
        f.write("def f():\n    from mgdet.export.saved_model import export_tflite\n"
                "    from mgdet.export.files import export_tflite\n"
                "    from mgdet.nothing import x\n")
    assert unresolved_imports([script], copy) == [
        "bench_planted.py:2: from mgdet.export.saved_model import export_tflite",
        "bench_planted.py:4: from mgdet.nothing import x (no module mgdet.nothing)"]
