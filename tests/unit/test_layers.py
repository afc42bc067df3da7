"""The layer map of docs/ARCHITECTURE.md, checked on the source: module-level imports have no cycle, `training`
imports nothing from `builder`, and the clients reach only the torch-free wire layer of `builder`."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("builder", "training", "clients")
WIRE = {"builder.triton.wire", "builder.selection", "builder.tensor_spec", "builder.cliutil"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _graph() -> dict[str, set[str]]:
    mods, graph = _modules(), defaultdict(set)
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are deferred
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[name].update(n for n in names if n in mods and n != name)
    return graph


def test_module_level_imports_have_no_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in graph[m]:
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in list(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_training_is_a_leaf_and_clients_use_only_the_wire_layer():
    graph = _graph()
    assert not [(a, b) for a in graph for b in graph[a] if a.startswith("training") and b.startswith("builder")]
    reached = {b for a in graph if a.startswith("clients") for b in graph[a] if b.startswith("builder")}
    assert reached and reached <= WIRE, reached - WIRE
