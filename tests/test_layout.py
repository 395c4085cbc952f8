"""The package's architecture, checked: every import (at module level or inside a function) goes from a layer
to one below it, and no module imports itself through others."""

import ast
import pathlib

import cac_jax

ROOT = pathlib.Path(cac_jax.__file__).parent
# Bottom to top; a module may import its own layer and those listed before it.
LAYERS = ["core", "objectives", "testing", "storage", "data", "config", "runtime", "models", "training", "evaluation", "runs", "cli", "__main__"]


def modules() -> dict[str, set[str]]:
    """{module: the cac_jax modules it imports}."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cac_jax"):
                found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("cac_jax")}
        graph[name] = found
    known = set(graph)
    return {m: {d for d in deps if d in known and d != m} for m, deps in graph.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1  # the package itself imports nothing


def test_every_import_goes_down_the_layers():
    wrong = [f"{m} -> {d}" for m, deps in modules().items() if m != "cac_jax" for d in deps
             if d != "cac_jax" and layer(d) > layer(m)]
    assert not wrong, "imports from a lower layer to a higher one: " + ", ".join(sorted(wrong))


def test_no_import_cycles():
    graph = modules()
    # A package's __init__ may import its own submodules (cac_jax.models re-exports its networks).
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                cycles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(cycles)
