"""The one rewrite driver. A pass is a rule `rule(b, node, inputs) -> outputs | None` applied
to every node in order; returning None keeps the node (rebuilt only if its inputs changed).
`run_pipeline` runs a flat list of named passes and can trace each stage (EMBER_DEBUG)."""
from __future__ import annotations

import os
import sys
import time

from ..ir.builder import Builder
from ..ir.graph import Graph


def rewrite(graph: Graph, rule, fold: bool = True, target=None) -> Graph:
    """Apply `rule` to every node of `graph` (in topological order); returns a new graph.
    `target` (an `ember.ir.target.Target`) is what rules that choose a strategy read, as
    `b.target`."""
    b = Builder(fold=fold, target=target)
    b.inputs = list(graph.inputs)
    subst: dict = {}

    def m(v):
        return None if v is None else subst.get(v.id, v)

    for node in graph.nodes:
        ins = [m(v) for v in node.inputs]
        b.origin = node.origin
        out = rule(b, node, ins) if rule is not None else None
        if out is None:
            if all(a is c for a, c in zip(ins, node.inputs)) and not (
                    fold and ins and all(v is None or v.is_const for v in ins)):
                b.nodes.append(node)
                continue
            out = b.op(node.op, ins, _name=node.name, _origin=node.origin, **node.attrs)
        out = out if isinstance(out, (list, tuple)) else [out]
        for old, new in zip(node.outputs, out):
            if new is not old:
                subst[old.id] = new
    return Graph(b.inputs, [m(v) for v in graph.outputs], b.nodes, graph.name, graph.output_names)


def uses_target(fn):
    """Marks a pass that takes the target: `fn(graph, target)`; the others are `fn(graph)`."""
    fn.uses_target = True
    return fn


def run_pipeline(graph: Graph, pipeline, trace=None, target=None) -> Graph:
    """Run `pipeline` (a list of (name, pass_fn)) in order, on `target` (None: the default
    target of `ember.ir.target`)."""
    debug = os.environ.get("EMBER_DEBUG", "")
    for name, fn in pipeline:
        t0 = time.perf_counter()
        graph = fn(graph, target) if getattr(fn, "uses_target", False) else fn(graph)
        if trace is not None:
            trace.append((name, time.perf_counter() - t0, len(graph.nodes)))
        if "graph" in debug or debug == "all":
            print(f"--- after pass {name}: {len(graph.nodes)} nodes ---\n{graph}", file=sys.stderr)
    return graph
