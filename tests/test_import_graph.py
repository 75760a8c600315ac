"""The import graph of the project's own modules (every import statement, at module level or inside a function):
no module takes part in a circle, and each layer imports only the layers below it (docs/architecture.md)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("graph", "execution", "diffusion", "model_management", "nodes", "compat", "scaleout", "api")
# What each layer may import besides itself.
ALLOWED = {
    "graph": set(),
    "execution": {"graph"},
    "diffusion": set(),
    "model_management": {"diffusion"},
    "nodes": {"graph", "execution", "diffusion", "model_management"},
    "compat": {"graph", "execution", "diffusion", "model_management", "nodes"},
    "scaleout": {"graph", "execution", "diffusion", "model_management", "nodes", "compat"},
    "api": {"graph", "execution", "diffusion", "model_management", "nodes", "compat"},
}


def project_modules() -> dict:
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    modules[dotted.removesuffix(".__init__")] = path
    modules["server"] = os.path.join(ROOT, "server.py")
    return modules


def imports_of(module: str, path: str, modules: dict) -> set:
    """The project modules `module` names in any import statement. `from pkg import sub` counts as using
    pkg.sub when that is a module (the package's __init__ running first is Python's business, not a use)."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    used = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            used.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    used.add(f"{base}.{alias.name}")
                elif base in modules:
                    used.add(base)
    used.discard(module)
    return used


def graph() -> dict:
    modules = project_modules()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def circles(edges: dict) -> list:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_in_a_circle():
    assert circles(graph()) == []


def test_the_circle_finder_finds_circles():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for module, used in graph().items():
        layer = module.split(".")[0]
        if layer == "server":
            continue
        for target in used:
            other = target.split(".")[0]
            if other != layer and other not in ALLOWED[layer]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_named_untangles_hold():
    edges = graph()
    assert not any(t.startswith("model_management") for t in edges["execution.scheduler"] | edges["execution.worker"])
    assert "compat.comfy_nodes" not in edges["nodes"]
    assert "model_management.residency" not in edges["model_management.model_objects"]
