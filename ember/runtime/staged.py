"""Models whose shapes depend on values computed from data, run in native stages.

A node like NonZero, Unique or NonMaxSuppression, fed from data, gives an output whose length only its input's values
decide. The model is split there: stage A (the nodes before it, a compiled model) computes
its input and every value the rest needs; the node itself runs as one native kernel
(written in Ember's kernel language) that counts and writes its output into a buffer of
the largest possible size; stage B (the nodes after it, compiled once with that length as
a symbolic dim) takes it from there. Between the stages, Python only passes arrays on. A
later such node splits stage B the same way, since B is an `InferenceSession` too."""
from __future__ import annotations

import threading

import numpy as np

from ..lang import Tensor, float32, int8, int64, kernel


@kernel
def nonzero_flat(x, strides: Tensor[int64, 1], out: Tensor[int64, 2]) -> int64:
    """The coordinates of x's non-zero elements (x flattened, `strides` its row-major strides)
    written to out[:, 0:count] in order; returns count."""
    n = 0
    for i in range(len(x)):
        if x[i] != 0:
            r = i
            for d in range(len(strides)):
                out[d, n] = r // strides[d]
                r = r % strides[d]
            n += 1
    return n


def nonzero(node, x: np.ndarray) -> np.ndarray:
    """ONNX NonZero, by the native kernel: int64 [rank, count]."""
    x = np.ascontiguousarray(x)
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    elif x.dtype.kind not in "fiu":     # (the narrow types: their bits are non-zero where they are)
        x = x.astype(np.float32)
    shape = x.shape if x.ndim else (1,)
    strides = np.array([int(np.prod(shape[i + 1:])) for i in range(len(shape))], np.int64)
    out = np.empty((len(shape), x.size), np.int64)
    count = int(nonzero_flat(x.reshape(-1), strides, out)) if x.size else 0
    return np.ascontiguousarray(out[: x.ndim, :count])


@kernel
def nms_rows(boxes: Tensor[float32, 3], scores: Tensor[float32, 3], max_out: int64, iou: float32,
             score_thr: float32, use_score: int64, center: int64, taken: Tensor[int8, 1],
             out: Tensor[int64, 2]) -> int64:
    """Greedy non-maximum suppression per batch and class: the highest-scoring box left (the
    lowest index among equals) is kept unless its IoU with one kept before exceeds `iou`;
    rows (batch, class, box) written to `out`; returns their count."""
    count = 0
    n = boxes.shape[1]
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            for i in range(n):
                taken[i] = int8(0)
                if use_score != 0 and not (scores[b, c, i] > score_thr):
                    taken[i] = int8(1)
            sel = 0
            while sel < max_out:
                best = -1
                top = float32(0.0)
                for i in range(n):
                    if taken[i] == int8(0):
                        s = scores[b, c, i]
                        if best < 0 or s > top:
                            best = i
                            top = s
                if best < 0:
                    break
                taken[best] = int8(1)
                keep = True
                for j in range(sel):
                    other = out[count - sel + j, 2]
                    if center == 0:
                        ax0 = min(boxes[b, best, 1], boxes[b, best, 3])
                        ax1 = max(boxes[b, best, 1], boxes[b, best, 3])
                        ay0 = min(boxes[b, best, 0], boxes[b, best, 2])
                        ay1 = max(boxes[b, best, 0], boxes[b, best, 2])
                        bx0 = min(boxes[b, other, 1], boxes[b, other, 3])
                        bx1 = max(boxes[b, other, 1], boxes[b, other, 3])
                        by0 = min(boxes[b, other, 0], boxes[b, other, 2])
                        by1 = max(boxes[b, other, 0], boxes[b, other, 2])
                    else:
                        ax0 = boxes[b, best, 0] - boxes[b, best, 2] / 2
                        ax1 = boxes[b, best, 0] + boxes[b, best, 2] / 2
                        ay0 = boxes[b, best, 1] - boxes[b, best, 3] / 2
                        ay1 = boxes[b, best, 1] + boxes[b, best, 3] / 2
                        bx0 = boxes[b, other, 0] - boxes[b, other, 2] / 2
                        bx1 = boxes[b, other, 0] + boxes[b, other, 2] / 2
                        by0 = boxes[b, other, 1] - boxes[b, other, 3] / 2
                        by1 = boxes[b, other, 1] + boxes[b, other, 3] / 2
                    iw = min(ax1, bx1) - max(ax0, bx0)
                    ih = min(ay1, by1) - max(ay0, by0)
                    if iw > 0 and ih > 0:
                        inter = iw * ih
                        area_a = (ax1 - ax0) * (ay1 - ay0)
                        area_b = (bx1 - bx0) * (by1 - by0)
                        union = area_a + area_b - inter
                        if area_a > 0 and area_b > 0 and union > 0 and inter / union > iou:
                            keep = False
                            break
                if keep:
                    out[count, 0] = int64(b)
                    out[count, 1] = int64(c)
                    out[count, 2] = int64(best)
                    count += 1
                    sel += 1
    return count


def non_max_suppression(node, boxes, scores, max_out=None, iou=None, score_thr=None):
    """ONNX NonMaxSuppression, by the native kernel: int64 [selected, 3]."""
    from onnx import helper

    from ..errors import InvalidInputError
    center = next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "center_point_box"), 0)
    boxes = np.ascontiguousarray(boxes, dtype=np.float32)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or scores.shape[0] != boxes.shape[0] \
            or scores.shape[2] != boxes.shape[1]:
        raise InvalidInputError(f"node '{node.name}' (NonMaxSuppression): boxes {list(boxes.shape)} and scores "
                                f"{list(scores.shape)} must be [batches, boxes, 4] and [batches, classes, boxes]")
    one = lambda v, d: d if v is None or np.size(v) == 0 else np.asarray(v).reshape(-1)[0]
    limit = max(int(one(max_out, 0)), 0)
    n = boxes.shape[1]
    out = np.empty((boxes.shape[0] * scores.shape[1] * min(limit, n), 3), np.int64)
    taken = np.empty(max(n, 1), np.int8)
    count = nms_rows(boxes, scores, min(limit, n), np.float32(one(iou, 0.0)), np.float32(one(score_thr, 0.0)),
                     0 if score_thr is None or np.size(score_thr) == 0 else 1, center, taken, out) if out.size else 0
    return np.ascontiguousarray(out[:count])


@kernel
def unique_rows(x, by_value: int64, order: Tensor[int64, 1], tmp: Tensor[int64, 1], group: Tensor[int64, 1],
                first: Tensor[int64, 1], counts: Tensor[int64, 1], rank: Tensor[int64, 1],
                y, indices: Tensor[int64, 1], inverse: Tensor[int64, 1], out_counts: Tensor[int64, 1]) -> int64:
    """The distinct rows of x [n, m]: y, their first indices and counts, sorted by value
    (`by_value`) or by first occurrence, and each row's position among them (inverse)."""
    n = x.shape[0]
    m = x.shape[1]

    def less(a, b):
        # rows a < b lexicographically; equal rows keep index order (the sort is stable)
        r = 0
        c = 0
        while c < m and r == 0:
            if x[a, c] < x[b, c]:
                r = -1
            elif x[b, c] < x[a, c]:
                r = 1
            c += 1
        return r

    def ordered(a, b, rows):
        if rows:
            return less(a, b) <= 0
        return first[a] <= first[b]

    def sort(arr, count, rows):
        # stable bottom-up merge sort of arr[0:count], by row (rows) or by first index
        width = 1
        while width < count:
            lo = 0
            while lo < count:
                mid = min(lo + width, count)
                hi = min(lo + 2 * width, count)
                i = lo
                j = mid
                k = lo
                while k < hi:
                    if j >= hi or (i < mid and ordered(arr[i], arr[j], rows)):
                        tmp[k] = arr[i]
                        i += 1
                    else:
                        tmp[k] = arr[j]
                        j += 1
                    k += 1
                lo = hi
            for t in range(count):
                arr[t] = tmp[t]
            width *= 2

    for i in range(n):
        order[i] = i
    sort(order, n, True)
    groups = 0
    for t in range(n):          # runs of equal rows: one group each, in value order
        if t == 0 or less(order[t - 1], order[t]) != 0:
            first[groups] = order[t]
            counts[groups] = 0
            groups += 1
        group[order[t]] = groups - 1
        counts[groups - 1] += 1
    for g in range(groups):
        rank[g] = g
    if by_value == 0:           # by first occurrence: the groups sorted by their first index
        sort(rank, groups, False)
    for p in range(groups):     # rank[p]: the group at output position p
        g = rank[p]
        indices[p] = first[g]
        out_counts[p] = counts[g]
        for c in range(m):
            y[p, c] = x[first[g], c]
        tmp[g] = p
    for r in range(n):
        inverse[r] = tmp[group[r]]
    return groups


def _unique2d(x, by_value):
    n = x.shape[0]
    bufs = [np.empty(max(n, 1), np.int64) for _ in range(6)]
    y = np.empty_like(x)
    idx, inv, cnt = (np.empty(max(n, 1), np.int64) for _ in range(3))
    k = unique_rows(x, by_value, *bufs, y, idx, inv, cnt) if n else 0
    return y[:k], idx[:k], inv[:n], cnt[:k]


def unique(node, x):
    """ONNX Unique, by the native kernel: (Y, indices, inverse_indices, counts)."""
    from onnx import helper
    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    x = np.asarray(x)
    dtype = x.dtype
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    sorted_ = int(at.get("sorted", 1))
    if "axis" not in at:
        y, idx, inv, cnt = _unique2d(np.ascontiguousarray(x.reshape(-1, 1)), sorted_)
        return y.reshape(-1).view(dtype), idx, inv, cnt
    axis = int(at["axis"])
    axis = axis + x.ndim if axis < 0 else axis
    front = np.moveaxis(x, axis, 0)
    rest = front.shape[1:]
    y, idx, inv, cnt = _unique2d(np.ascontiguousarray(front.reshape(front.shape[0], -1)), sorted_)
    y = np.ascontiguousarray(np.moveaxis(y.reshape((-1,) + rest), 0, axis))
    return y.view(dtype), idx, inv, cnt


def _unique_axis(node, k, a):
    from onnx import helper
    axis = next((int(helper.get_attribute_value(t)) for t in node.attribute if t.name == "axis"), None)
    if k == 0:
        return 0 if axis is None else (axis + a.ndim if axis < 0 else axis)
    return None if k == 2 else 0      # inverse_indices: one per input row, not data-set


# the ops a stage boundary can be placed at: the native kernel that computes one (from the
# node and its input arrays, None for an absent one; an output or a tuple of them) and, per
# output, the axis whose length the data sets
STAGE_KERNELS = {"NonZero": (nonzero, lambda node, k, a: 1),
                 "NonMaxSuppression": (non_max_suppression, lambda node, k, a: 0),
                 "Unique": (unique, _unique_axis)}


def _compress_as_nonzero(n):
    """Compress(x, cond[, axis]) as NonZero(cond) -> Reshape [-1] -> Gather (x flattened without
    an axis): its one data-dependent step is then the NonZero."""
    from onnx import helper
    axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), None)
    base = n.output[0]
    shape = helper.make_node("Constant", [], [base + "/minus_one"],
                             value=helper.make_tensor(base + "/minus_one", 7, [1], [-1]))
    nodes = [shape, helper.make_node("NonZero", [n.input[1]], [base + "/nonzero"]),
             helper.make_node("Reshape", [base + "/nonzero", base + "/minus_one"], [base + "/picked"])]
    x = n.input[0]
    if axis is None:
        nodes.append(helper.make_node("Reshape", [x, base + "/minus_one"], [base + "/flat"]))
        x, axis = base + "/flat", 0
    nodes.append(helper.make_node("Gather", [x, base + "/picked"], [base], axis=axis))
    return nodes


# data-dependent ops written with one that has a stage kernel
STAGE_REWRITES = {"Compress": _compress_as_nonzero}


def _referenced(nodes) -> set:
    """Every name the nodes read, their subgraphs' reads of the enclosing scope included."""
    from onnx import helper
    names = set()
    for n in nodes:
        names.update(x for x in n.input if x)
        for a in n.attribute:
            v = helper.get_attribute_value(a)
            for g in (v if isinstance(v, list) else [v]):
                if hasattr(g, "node") and hasattr(g, "output"):
                    names |= _referenced(g.node)
                    names.update(o.name for o in g.output)
    return names


class StagedModel:
    """A model split at a data-dependent node into stage A, the node's kernel, and stage B."""

    LIMIT = 16

    def __init__(self, proto, node, options, session_type):
        from onnx import helper
        g = proto.graph
        at = [k for k, n in enumerate(g.node) if list(n.output) == list(node.output) and n.op_type == node.op_type]
        if not at or (node.op_type not in STAGE_KERNELS and node.op_type not in STAGE_REWRITES):
            raise LookupError(node.op_type)
        k = at[0]
        if node.op_type in STAGE_REWRITES:
            new = type(proto)()
            new.CopyFrom(proto)
            nodes = list(new.graph.node)
            nodes[k:k + 1] = STAGE_REWRITES[node.op_type](nodes[k])
            del new.graph.node[:]
            new.graph.node.extend(nodes)
            proto, g = new, new.graph
            k = next(i for i in range(k, len(nodes)) if nodes[i].op_type in STAGE_KERNELS)
        before, self.node, after = list(g.node[:k]), g.node[k], list(g.node[k + 1:])
        self.options, self.session_type = options, session_type
        self.kernel, self.data_axis = STAGE_KERNELS[self.node.op_type]
        produced = [o for n in before for o in n.output if o]
        needed = _referenced(after) | {o.name for o in g.output}
        self.args = list(self.node.input)
        self.carried = [o for o in dict.fromkeys(produced) if o in needed]
        inputs = {vi.name for vi in g.input}
        self.passed = [vi for vi in g.input if vi.name in needed]
        self.a_outputs = list(dict.fromkeys([x for x in self.args if x in produced] + self.carried))
        self.stage_a = None
        if self.a_outputs:
            a = type(proto)()
            a.CopyFrom(proto)
            del a.graph.node[:]
            a.graph.node.extend(before)
            del a.graph.output[:]
            a.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in self.a_outputs)
            self.stage_a = session_type(a.SerializeToString(), options)
        known = inputs | {i.name for i in g.initializer} | set(produced)
        if any(x and x not in known for x in self.args):
            raise LookupError(self.node.op_type)
        # (a plain compiled stage A knows its outputs' shapes; a per-value or staged one does not)
        self.a_shapes = {o.name: o.shape for o in self.stage_a.get_outputs()} \
            if self.stage_a is not None and getattr(self.stage_a, "_c", None) is not None else {}
        self.proto, self.after, self.outputs = proto, after, [o.name for o in g.output]
        self.b_produced = {o for n in after for o in n.output if o} | set(self.node.output)
        self.sessions: dict = {}
        self.lock = threading.Lock()

    def _stage_b(self, values: dict):
        """Stage B for the dtypes and ranks of the values it takes (each dim a symbol)."""
        from onnx import helper
        from onnx.helper import np_dtype_to_tensor_dtype
        key = tuple((n, a.dtype.str, tuple(self._dims(n, a))) for n, a in values.items())
        with self.lock:
            sess = self.sessions.get(key)
        if sess is not None:
            return sess
        m = type(self.proto)()
        m.CopyFrom(self.proto)
        g = m.graph
        passed = {vi.name for vi in self.passed}
        decl = [vi for vi in g.input if vi.name in passed]
        for name, a in values.items():
            if name in passed:
                continue
            decl.append(helper.make_tensor_value_info(name, np_dtype_to_tensor_dtype(a.dtype), self._dims(name, a)))
        del g.input[:]
        g.input.extend(decl)
        del g.node[:]
        g.node.extend(self.after)
        outs = [vo for vo in g.output if vo.name in self.b_produced]
        del g.output[:]
        g.output.extend(outs)
        sess = self.session_type(m.SerializeToString(), self.options) if outs else None
        with self.lock:
            self.sessions[key] = sess
            if len(self.sessions) > self.LIMIT:
                self.sessions.pop(next(iter(self.sessions)))
        return sess

    def _dims(self, name, a):
        """Stage B's declared dims for value `name` (array `a`): an output of the node has its
        data-set axis a symbol (one count for all its outputs); a value from stage A keeps the
        dims stage A's compiled outputs give (ints, or symbols of the model's inputs), else its
        actual ones."""
        outs = list(self.node.output)
        if name in outs:
            axis = self.data_axis(self.node, outs.index(name), a)
            sym = "".join(ch if ch.isalnum() else "_" for ch in outs[0]) + "_count"
            return [sym if i == axis else d for i, d in enumerate(a.shape)]
        shape = self.a_shapes.get(name)
        if shape is None or len(shape) != a.ndim:
            return list(a.shape)
        return [d if isinstance(d, int) else (str(d) if str(d).isidentifier() else int(a.shape[i]))
                for i, d in enumerate(shape)]

    def run(self, output_names, feed):
        from ..errors import InvalidInputError
        if not isinstance(feed, dict):
            raise InvalidInputError(f"feeds must be a dict of input name -> array, got {type(feed).__name__}")
        got = {}
        if self.stage_a is not None:
            got.update(zip(self.a_outputs, self.stage_a.run(None, feed)))
        args = []
        for x in self.args:
            v = None if not x else got[x] if x in got else feed.get(x)
            if x and v is None:
                v = next(self._initializer(x))
            args.append(None if v is None else np.asarray(v))
        results = self.kernel(self.node, *args)
        values = {}
        for name, r in zip(self.node.output, results if isinstance(results, tuple) else (results,)):
            if name:
                got[name] = values[name] = r
        values.update((c, got[c]) for c in self.carried)
        values.update((vi.name, feed[vi.name]) for vi in self.passed if vi.name in feed)
        sess = self._stage_b(values)
        if sess is not None:
            feed_b = {n: values[n] for n in (i.name for i in sess.get_inputs()) if n in values}
            outs = sess.run(None, feed_b)      # (first: a by-value stage names its outputs once run)
            got.update(zip([o.name for o in sess.get_outputs()], outs))
        names = output_names if output_names is not None else self.outputs
        missing = [n for n in names if n not in got]
        if missing:
            raise InvalidInputError(f"unknown output name(s) {missing}; the model's outputs are {self.outputs}")
        return [got[n] for n in names]

    def _initializer(self, name):
        from onnx import numpy_helper
        for i in self.proto.graph.initializer:
            if i.name == name:
                yield numpy_helper.to_array(i)
