"""Cut a model in two with torch.fx: ``tail(*front(*x)) == model(*x)``.

One symbolic trace gives a graph of the whole forward, functional ops included (ResNet's
``flatten``, ViT's class-token ``cat``, CLIP's dtype cast). A cut is a set of graph nodes:

* the **front** is the cut nodes plus everything they depend on, returning the cut nodes as a tuple;
* the **tail** takes the cut values as placeholders and computes the original output from them.
  Nodes the tail needs from before the cut are recomputed when they do not depend on the input
  (parameters, constants); a tail that would need the input itself through another path is an
  error that names the node (add that node to the cut instead).

Cut names are module qualnames (``layer3``, ``blocks.2``, ``encoder.layers.encoder_layer_5``: the
output of that module call) or plain FX node names (``cat``, ``add_1``). A module that returns
several tensors (SlowFast's pathway list) makes a cut of several tensors.

This replaces ``IntermediateLayerGetter``-style slicing of ``named_children``, which silently
drops functional code between modules. For ``Net(blocks)``-style models that do not trace, a
sequential fallback (:func:`sequential_split`) runs ``blocks[:k+1]`` / ``blocks[k+1:]``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
from torch import nn
from torch.fx import Graph, GraphModule, Node, Proxy
from torch.utils import _pytree as pytree

__all__ = ["SplitError", "Traced", "trace", "fx_node_names", "fx_split", "sequential_split"]


class SplitError(ValueError):
    """The model cannot be cut at the requested place."""


class _Tracer(torch.fx.Tracer):
    """Symbolic tracer that records which graph nodes each module call returned."""

    def __init__(self, leaf_modules: Iterable[type] = (), autowrap_functions: Iterable = ()) -> None:
        super().__init__(autowrap_functions=tuple(autowrap_functions))
        self._leaf_types = tuple(leaf_modules)
        self.module_outputs: dict[str, list[Node]] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        if type(m) is nn.Identity:  # trace through: a leaf Identity would turn a list input into one opaque value
            return False
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        try:
            qualname = self.path_of_module(m)
        except NameError:  # a module created during forward
            return out
        nodes = [p.node for p in pytree.tree_leaves(out) if isinstance(p, Proxy)]
        if qualname and nodes:
            self.module_outputs[qualname] = nodes
        return out


@dataclass
class Traced:
    """A traced model: its GraphModule and the output node(s) of every module call, by qualname."""

    gm: GraphModule
    module_outputs: dict[str, list[Node]]

    def nodes_for(self, at: str | Sequence[str]) -> list[Node]:
        names = [at] if isinstance(at, str) else list(at)
        by_name = {n.name: n for n in self.gm.graph.nodes}
        out: list[Node] = []
        for name in names:
            if name in self.module_outputs:
                nodes = self.module_outputs[name]
            elif name in by_name and by_name[name].op not in ("placeholder", "output"):
                nodes = [by_name[name]]
            else:
                raise SplitError(f"no module or graph node named {name!r}; see node_names() for valid cuts")
            out.extend(n for n in nodes if n not in out)
        return out


def trace(
    model: nn.Module,
    *,
    leaf_modules: Iterable[type] = (),
    autowrap_functions: Iterable = (),
    concrete_args: dict[str, Any] | None = None,
) -> Traced:
    """Symbolically trace ``model`` (in eval mode: ``self.training`` branches are baked in).

    ``concrete_args`` may give an input's structure, e.g. ``{"x": [PH, PH]}`` for a model that
    asserts it receives a list of two tensors (the graph then takes that list, via pytree).
    """
    was_training = model.training
    model.eval()
    tracer = _Tracer(leaf_modules, autowrap_functions)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except Exception as e:  # torch.fx raises TraceError, TypeError, RuntimeError... depending on the construct
        raise SplitError(f"{type(model).__name__} cannot be traced with torch.fx: {e}") from e
    finally:
        model.train(was_training)
    gm = GraphModule(tracer.root, graph, class_name=type(model).__name__)
    # the GraphModule reuses graph's nodes, so module_outputs stays valid
    return Traced(gm, tracer.module_outputs)


def fx_node_names(traced: Traced) -> list[str]:
    """Module qualnames that can be cut at, in execution order of their outputs."""
    order = {n: i for i, n in enumerate(traced.gm.graph.nodes)}
    names = [q for q, nodes in traced.module_outputs.items() if nodes]
    return sorted(names, key=lambda q: max(order[n] for n in traced.module_outputs[q]))


def _ancestors(nodes: Sequence[Node]) -> set[Node]:
    seen: set[Node] = set()
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(n.all_input_nodes)
    return seen


def fx_split(traced: Traced, at: str | Sequence[str]) -> tuple[GraphModule, GraphModule]:
    """Front and tail GraphModules for a cut at ``at`` (module qualname(s) or node name(s)).

    The front keeps the model's input signature and returns a tuple of the cut values; the tail
    takes them positionally and returns what the model returns.
    """
    gm = traced.gm
    cut = traced.nodes_for(at)
    (output,) = [n for n in gm.graph.nodes if n.op == "output"]

    # ---- front: the cut nodes and their ancestors
    front_nodes = _ancestors(cut)
    front = Graph()
    front._codegen = copy.deepcopy(gm.graph._codegen)  # keeps a pytree input spec (list inputs)
    env: dict[Node, Node] = {}
    for n in gm.graph.nodes:
        if n.op == "placeholder" or (n in front_nodes and n.op != "output"):
            env[n] = front.node_copy(n, lambda a: env[a])
    front.output(tuple(env[n] for n in cut))
    if isinstance(front._codegen, torch.fx.graph._PyTreeCodeGen):  # outputs: a flat tuple
        front._codegen.pytree_info = front._codegen.pytree_info._replace(out_spec=None)

    # ---- tail: what the output needs, stopping at the cut nodes
    needed: set[Node] = set()
    stack: list[tuple[Node, Node]] = [(a, output) for a in output.all_input_nodes]
    while stack:
        n, user = stack.pop()
        if n in needed or n in cut:
            continue
        if n.op == "placeholder":
            raise SplitError(
                f"cut {at!r} is not a clean cut: node {user.name!r} after the cut still reads the model input "
                f"{n.name!r} through another path; add that path's node to the cut"
            )
        needed.add(n)
        stack.extend((a, n) for a in n.all_input_nodes)
    tail = Graph()
    tenv: dict[Node, Node] = {}
    for i, n in enumerate(cut):
        tenv[n] = tail.placeholder(f"cut_{i}" if len(cut) > 1 else "features")
    for n in gm.graph.nodes:
        if n in needed:
            tenv[n] = tail.node_copy(n, lambda a: tenv[a])
    result = torch.fx.map_arg(output.args[0], lambda a: tenv[a])
    codegen = gm.graph._codegen
    if isinstance(codegen, torch.fx.graph._PyTreeCodeGen) and codegen.pytree_info.out_spec is not None:
        result = pytree.tree_unflatten(list(result), codegen.pytree_info.out_spec)  # plain output, no pytree codegen
    tail.output(result)
    front_gm = GraphModule(gm, front, class_name="Front")
    tail_gm = GraphModule(gm, tail, class_name="Tail")
    front_gm.graph.lint()
    tail_gm.graph.lint()
    return front_gm, tail_gm


class _Seq(nn.Module):
    """Run blocks in order; flatten a list/tuple result into a tuple of tensors (``as_tuple``)."""

    def __init__(self, blocks: Sequence[nn.Module], *, as_tuple: bool, repack: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.as_tuple = as_tuple
        self.repack = repack  # tail side: inputs arrive as *tensors, the first block wants a list

    def forward(self, *xs):
        x = list(xs) if self.repack else xs[0]
        for b in self.blocks:
            x = b(x)
        if self.as_tuple:
            return tuple(x) if isinstance(x, (list, tuple)) else (x,)
        return x


def sequential_split(blocks: nn.ModuleList, index: int, *, multi: bool) -> tuple[nn.Module, nn.Module]:
    """Fallback for ``Net(blocks)``: front runs ``blocks[:index+1]``, tail the rest.

    ``multi`` says the value between the blocks is a list of tensors (SlowFast pathways), which
    the front returns as a tuple and the tail repacks into a list.
    """
    if not 0 <= index < len(blocks) - 1:
        raise SplitError(f"block index {index} out of range: cut between blocks 0..{len(blocks) - 2}")
    front = _Seq(list(blocks[: index + 1]), as_tuple=True, repack=False)
    tail = _Seq(list(blocks[index + 1 :]), as_tuple=False, repack=multi)
    return front.eval(), tail.eval()
