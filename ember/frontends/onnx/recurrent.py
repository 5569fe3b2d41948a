"""RNN, GRU and LSTM, and ReverseSequence, as compositions of Ember ops.

The input projection of every time step runs as one matmul over the whole sequence; the
recurrence is unrolled, one step's ops per time step (so the sequence length must be known
when compiling). Directions, both layouts, sequence lengths (a batch row's state stops at its
length, its later outputs are 0), initial states, peepholes, clip and every activation
function the spec names are handled."""
from __future__ import annotations

from ...ir import symbolic as S
from ...ir.graph import Value
from ...errors import ShapeError
from .converters import ConvertError, attrs_of, known, stack, static_or_fixed, take

# the unrolled recurrence is bounded, so that a long sequence is refused clearly
MAX_STEPS = 4096


def _scalar(b, x, v):
    return b.scalar(float(v), x.dtype)


# name -> (takes alpha, takes beta, default alpha, default beta, fn(b, x, alpha, beta))
_ACTIVATIONS = {
    "relu": (False, False, 0, 0, lambda b, x, a, c: b.op("relu", [x])),
    "tanh": (False, False, 0, 0, lambda b, x, a, c: b.op("tanh", [x])),
    "sigmoid": (False, False, 0, 0, lambda b, x, a, c: b.op("sigmoid", [x])),
    "softplus": (False, False, 0, 0, lambda b, x, a, c: b.op("softplus", [x])),
    "softsign": (False, False, 0, 0, lambda b, x, a, c: b.op("div", [x, b.op("add", [
        _scalar(b, x, 1), b.op("abs", [x])])])),
    "affine": (True, True, 1.0, 0.0, lambda b, x, a, c: b.op("add", [b.op("mul", [x, _scalar(b, x, a)]),
                                                                    _scalar(b, x, c)])),
    "leakyrelu": (True, False, 0.01, 0, lambda b, x, a, c: b.op("leaky_relu", [x], alpha=float(a))),
    "thresholdedrelu": (True, False, 1.0, 0, lambda b, x, a, c: b.op("where", [
        b.op("gt", [x, _scalar(b, x, a)]), x, _scalar(b, x, 0)])),
    "scaledtanh": (True, True, 1.0, 1.0, lambda b, x, a, c: b.op("mul", [
        _scalar(b, x, a), b.op("tanh", [b.op("mul", [x, _scalar(b, x, c)])])])),
    "hardsigmoid": (True, True, 0.2, 0.5, lambda b, x, a, c: b.op("clip", [
        b.op("add", [b.op("mul", [x, _scalar(b, x, a)]), _scalar(b, x, c)]), _scalar(b, x, 0), _scalar(b, x, 1)])),
    "elu": (True, False, 1.0, 0, lambda b, x, a, c: b.op("where", [
        b.op("lt", [x, _scalar(b, x, 0)]),
        b.op("mul", [_scalar(b, x, a), b.op("sub", [b.op("exp", [x]), _scalar(b, x, 1)])]), x])),
}


def _activations(at, defaults, directions):
    """One list of activation functions per direction. Alphas and betas are consumed in order
    by the functions that take them (as onnxruntime reads them)."""
    names = [s.decode() if isinstance(s, bytes) else s for s in at.get("activations", [])] or defaults * directions
    if len(names) == len(defaults) and directions == 2:
        names = names * 2
    if len(names) != len(defaults) * directions:
        raise ShapeError(f"activations lists {len(names)} functions; {len(defaults)} per direction are expected")
    alphas, betas = list(at.get("activation_alpha", [])), list(at.get("activation_beta", []))
    fns = []
    for name in names:
        spec = _ACTIVATIONS.get(name.lower())
        if spec is None:
            raise ConvertError(f"activation function '{name}' is not supported "
                               f"(supported: {', '.join(sorted(_ACTIVATIONS))})")
        takes_a, takes_b, da, db, fn = spec
        a = alphas.pop(0) if takes_a and alphas else da
        c = betas.pop(0) if takes_b and betas else db
        fns.append(lambda b, x, fn=fn, a=a, c=c: fn(b, x, a, c))
    k = len(defaults)
    return [fns[i * k:(i + 1) * k] for i in range(directions)]


def _part(b, v, k, h):
    """Gate k (width h) of the last axis of `v`."""
    starts = [0] * (v.type.rank - 1) + [k * h]
    sizes = list(v.shape[:-1]) + [h]
    return b.op("slice", [v], starts=tuple(starts), steps=(1,) * v.type.rank, sizes=tuple(sizes))


def reverse_sequence(b, x: Value, lens: Value, time_axis: int, batch_axis: int) -> Value:
    """x with each batch row's first lens[row] steps along `time_axis` reversed, the rest kept."""
    rank = x.type.rank
    steps = x.shape[time_axis]
    t_shape = tuple(steps if i == time_axis else 1 for i in range(rank))
    b_shape = tuple(x.shape[batch_axis] if i == batch_axis else 1 for i in range(rank))
    t = b.op("reshape", [b.op("range", [], start=0, delta=1, length=steps, dtype="int64")], shape=t_shape)
    n = b.op("reshape", [lens if lens.dtype == "int64" else b.op("cast", [lens], to="int64")], shape=b_shape)
    src = b.op("where", [b.op("lt", [t, n]), b.op("sub", [b.op("sub", [n, b.scalar(1, "int64")]), t]), t])
    return b.op("gather_elements", [x, b.op("expand", [src], shape=tuple(x.shape))], axis=time_axis)


class _Inputs:
    """The operands of a recurrent node, normalised: x as [T, B, I], one direction's W, R and
    biases on request, the initial states, the sequence lengths (None when every row is full)."""

    def __init__(self, b, n, ins, gates):
        at = attrs_of(n)
        self.at = at
        self.layout = int(at.get("layout", 0))
        x = ins[0]
        if x.type.rank != 3:
            raise ShapeError(f"X must be 3-D, got shape {list(x.shape)}")
        self.x = b.op("transpose", [x], perm=(1, 0, 2)) if self.layout else x
        self.steps, self.batch = self.x.shape[0], self.x.shape[1]
        self.w, self.r = ins[1], ins[2]
        self.hidden = self.r.shape[-1]
        direction = at.get("direction", "forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ShapeError(f"direction must be forward, reverse or bidirectional, got '{direction}'")
        self.reverse = [False, True] if direction == "bidirectional" else [direction == "reverse"]
        nd = len(self.reverse)
        h = self.hidden
        for name, v, want in (("W", self.w, (nd, gates * h, x.shape[2])), ("R", self.r, (nd, gates * h, h))):
            if v.type.rank != 3 or v.shape[0] != nd or v.shape[1] != gates * h:
                raise ShapeError(f"{name} must have shape {list(want)}, got {list(v.shape)}")
        hs = at.get("hidden_size")
        if hs is not None and int(hs) != h:
            raise ShapeError(f"hidden_size is {hs} but R's last dim is {h}")
        self.bias = ins[3] if len(ins) > 3 else None
        lens = ins[4] if len(ins) > 4 else None
        if lens is not None:
            try:
                full = known(lens, "sequence_lens")
            except ConvertError:
                full = None
            if full is not None and all(int(v) == self.steps for v in full.reshape(-1)):
                lens = None
        self.lens = lens
        self.state0 = list(ins[5:])
        self.clip = at.get("clip")

    def native(self, defaults) -> bool:
        """Whether the recurrence runs as a native loop (ember/kernels/recurrent.py): float32
        with the default gate functions. Otherwise it is unrolled, which needs the sequence
        length known when compiling."""
        names = [a.decode() if isinstance(a, bytes) else a for a in self.at.get("activations", [])]
        if self.x.dtype == "float32" and all(a.lower() == d.lower() for a, d in
                                             zip(names, defaults * len(self.reverse))):
            return True
        static_or_fixed(self.steps, f"the sequence length of a recurrence of {self.x.dtype} or with activations "
                                    f"{names}, which Ember unrolls,")
        if self.steps > MAX_STEPS:
            raise ConvertError(f"a sequence of {self.steps} steps is longer than Ember unrolls ({MAX_STEPS})")
        return False

    def run_native(self, b, d, cell, xp, rt, states, **attrs):
        """Direction d's recurrence op over projections `xp` [T, B, gates*H] (not reversed):
        (Y [T, B, H], final h [B, H], final c [B, H])."""
        lens = self.lens
        if lens is None:        # every row runs the whole sequence (the kernel clamps to T)
            lens = b.op("expand", [b.scalar(1 << 62, "int64")], shape=(1,))
        elif lens.dtype != "int64":
            lens = b.op("cast", [lens], to="int64")
        out = b.op("recurrence", [xp, rt] + states + [lens], cell=cell, reverse=int(self.reverse[d]),
                   clip=float(self.clip or 0.0), **attrs)
        h = self.hidden
        y = b.op("slice", [out], starts=(0, 0, 0), steps=(1, 1, 1), sizes=(self.steps, self.batch, h))
        return y, take(b, out, 0, self.steps), take(b, out, 0, self.steps + 1)

    def packed_weights(self, b, d, gates):
        """R[d]^T packed for the native loop: [ceil(H / 16), H, gates, 16], R^T[k, g*H + j] at
        [j // 16, k, g, j % 16], zero past H (see ember/kernels/recurrent.py)."""
        h = self.hidden
        blocks = S.floordiv(h + 15, 16)
        r = b.op("reshape", [take(b, self.r, 0, d)], shape=(gates, h, h))          # [g, j, k]
        if blocks * 16 != h:
            r = b.op("pad", [r, b.scalar(0.0, r.dtype)], pre=(0, 0, 0), post=(0, blocks * 16 - h, 0),
                     mode="constant")
        r = b.op("reshape", [r], shape=(gates, blocks, 16, h))
        return b.op("transpose", [r], perm=(1, 3, 0, 2))

    def zeros(self, b, n):
        return b.op("expand", [b.scalar(0.0, self.x.dtype)], shape=(n,))

    def initial(self, b, k, d):
        """Initial state k (0: h, 1: c) for direction d, as [B, H]."""
        s = self.state0[k] if k < len(self.state0) else None
        if s is None:
            return b.op("expand", [b.scalar(0.0, self.x.dtype)], shape=(self.batch, self.hidden))
        if self.layout:
            s = b.op("transpose", [s], perm=(1, 0, 2))
        return take(b, s, 0, d)

    def bias_parts(self, b, d, gates):
        """(Wb, Rb) of direction d, each [gates*H], or None without a bias."""
        if self.bias is None:
            return None
        bd = take(b, self.bias, 0, d)
        g = gates * self.hidden
        return (b.op("slice", [bd], starts=(0,), steps=(1,), sizes=(g,)),
                b.op("slice", [bd], starts=(g,), steps=(1,), sizes=(g,)))

    def projected(self, b, d, extra_bias=None, per_row_reverse=True):
        """x @ W[d]^T (+ bias) over the whole sequence, as [T, B, gates*H]: one matmul.
        A reverse direction with sequence lengths gets each row reversed within its length
        (for the unrolled recurrence) unless `per_row_reverse` is off."""
        steps, batch = self.steps, self.batch
        x = self.x
        if self.lens is not None and self.reverse[d] and per_row_reverse:
            x = reverse_sequence(b, x, self.lens, 0, 1)
        flat = b.op("reshape", [x], shape=(steps * batch, x.shape[2]))
        wt = b.op("transpose", [take(b, self.w, 0, d)], perm=(1, 0))
        y = b.op("matmul", [flat, wt])
        if extra_bias is not None:
            y = b.op("add", [y, extra_bias])
        return b.op("reshape", [y], shape=(steps, batch, wt.shape[1]))

    def clipped(self, b, v):
        if self.clip is None:
            return v
        c = float(self.clip)
        return b.op("clip", [v, b.scalar(-c, v.dtype), b.scalar(c, v.dtype)])

    def order(self, d):
        """The time steps direction d visits, in order (a reversed input already is reversed
        per row when there are sequence lengths)."""
        ts = list(range(self.steps))
        return ts[::-1] if self.reverse[d] and self.lens is None else ts

    def valid(self, b, t):
        """[B, 1] bool: the rows whose sequence includes step t (None: all)."""
        if self.lens is None:
            return None
        n = self.lens if self.lens.dtype == "int64" else b.op("cast", [self.lens], to="int64")
        return b.op("reshape", [b.op("gt", [n, b.scalar(t, "int64")])], shape=(self.batch, 1))

    def advance(self, b, t, new, old, y):
        """The state after step t (rows past their length keep `old`); appends the step's
        output (0 for those rows) to `y`."""
        valid = self.valid(b, t)
        y.append(_zeroed(b, valid, new))
        return _keep(b, valid, new, old)

    def outputs(self, b, ys, finals):
        """Y [T, D, B, H] (layout 1: [B, T, D, H]) and each final state [D, B, H] ([B, D, H]),
        from the unrolled steps' outputs."""
        per_dir = []
        for d, y in enumerate(ys):
            if self.reverse[d] and self.lens is None:
                y = y[::-1]                           # visited last step first
            seq = stack(b, y, 0)                      # [T, B, H]
            if self.lens is not None and self.reverse[d]:
                seq = reverse_sequence(b, seq, self.lens, 0, 1)    # reversed per row
            per_dir.append(seq)
        return self.assemble(b, per_dir, finals)

    def assemble(self, b, per_dir, finals):
        """The node's outputs from each direction's Y [T, B, H] and final states."""
        y_all = stack(b, per_dir, 1)                  # [T, D, B, H]
        states = [stack(b, list(f), 0) for f in zip(*finals)]   # each [D, B, H]
        if self.layout:
            y_all = b.op("transpose", [y_all], perm=(2, 0, 1, 3))
            states = [b.op("transpose", [s], perm=(1, 0, 2)) for s in states]
        return [y_all] + states


def _keep(b, valid, new, old):
    return new if valid is None else b.op("where", [valid, new, old])


def _zeroed(b, valid, h):
    return h if valid is None else b.op("where", [valid, h, b.scalar(0.0, h.dtype)])


def _rnn(b, n, ins, opset):
    p = _Inputs(b, n, ins, 1)
    acts = _activations(p.at, ["Tanh"], len(p.reverse))
    if p.native(["Tanh"]):
        ys, finals = [], []
        for d in range(len(p.reverse)):
            biases = p.bias_parts(b, d, 1)
            xw = p.projected(b, d, None if biases is None else b.op("add", list(biases)), per_row_reverse=False)
            y, h, _ = p.run_native(b, d, "rnn", xw, p.packed_weights(b, d, 1), [p.initial(b, 0, d)])
            ys.append(y)
            finals.append((h,))
        return p.assemble(b, ys, finals)
    ys, finals = [], []
    for d in range(len(p.reverse)):
        biases = p.bias_parts(b, d, 1)
        xw = p.projected(b, d, None if biases is None else b.op("add", list(biases)))
        rt = b.op("transpose", [take(b, p.r, 0, d)], perm=(1, 0))
        h = p.initial(b, 0, d)
        y = []
        for t in p.order(d):
            pre = p.clipped(b, b.op("add", [take(b, xw, 0, t), b.op("matmul", [h, rt])]))
            h = p.advance(b, t, acts[d][0](b, pre), h, y)
        ys.append(y)
        finals.append((h,))
    return p.outputs(b, ys, finals)


def _gru(b, n, ins, opset):
    p = _Inputs(b, n, ins, 3)
    acts = _activations(p.at, ["Sigmoid", "Tanh"], len(p.reverse))
    lbr = int(p.at.get("linear_before_reset", 0))
    hid = p.hidden
    native = p.native(["Sigmoid", "Tanh"])
    ys, finals = [], []
    for d in range(len(p.reverse)):
        biases = p.bias_parts(b, d, 3)
        if biases is None:
            xw, rbh = p.projected(b, d, per_row_reverse=not native), None
        else:   # z and r take both biases up front; h's recurrent bias goes inside the reset
            wb, rb = biases
            zr = b.op("slice", [rb], starts=(0,), steps=(1,), sizes=(2 * hid,))
            rbh = b.op("slice", [rb], starts=(2 * hid,), steps=(1,), sizes=(hid,))
            pad = b.op("concat", [zr, b.op("expand", [b.scalar(0.0, rb.dtype)], shape=(hid,))], axis=0)
            xw = p.projected(b, d, b.op("add", [wb, pad]), per_row_reverse=not native)
        r_d = take(b, p.r, 0, d)
        if native:
            y, h, _ = p.run_native(b, d, "gru", xw, p.packed_weights(b, d, 3),
                                   [p.initial(b, 0, d), rbh if rbh is not None else p.zeros(b, hid)],
                                   linear_before_reset=lbr)
            ys.append(y)
            finals.append((h,))
            continue
        rzr_t = b.op("transpose", [b.op("slice", [r_d], starts=(0, 0), steps=(1, 1), sizes=(2 * hid, hid))], perm=(1, 0))
        rh_t = b.op("transpose", [b.op("slice", [r_d], starts=(2 * hid, 0), steps=(1, 1), sizes=(hid, hid))],
                    perm=(1, 0))
        f, g = acts[d]
        h = p.initial(b, 0, d)
        y = []
        for t in p.order(d):
            xt = take(b, xw, 0, t)
            hzr = b.op("matmul", [h, rzr_t])
            z = f(b, p.clipped(b, b.op("add", [_part(b, xt, 0, hid), _part(b, hzr, 0, hid)])))
            r = f(b, p.clipped(b, b.op("add", [_part(b, xt, 1, hid), _part(b, hzr, 1, hid)])))
            if lbr:
                hh = b.op("matmul", [h, rh_t])
                if rbh is not None:
                    hh = b.op("add", [hh, rbh])
                pre = b.op("add", [_part(b, xt, 2, hid), b.op("mul", [r, hh])])
            else:
                hh = b.op("matmul", [b.op("mul", [r, h]), rh_t])
                if rbh is not None:
                    hh = b.op("add", [hh, rbh])
                pre = b.op("add", [_part(b, xt, 2, hid), hh])
            cand = g(b, p.clipped(b, pre))
            one = b.scalar(1.0, h.dtype)
            new = b.op("add", [b.op("mul", [b.op("sub", [one, z]), cand]), b.op("mul", [z, h])])
            h = p.advance(b, t, new, h, y)
        ys.append(y)
        finals.append((h,))
    return p.assemble(b, ys, finals) if native else p.outputs(b, ys, finals)


def _lstm(b, n, ins, opset):
    p = _Inputs(b, n, ins[:7], 4)
    peep = ins[7] if len(ins) > 7 else None
    if int(p.at.get("input_forget", 0)):
        raise ConvertError("LSTM with input_forget=1 (coupled input and forget gates) is not supported")
    acts = _activations(p.at, ["Sigmoid", "Tanh", "Tanh"], len(p.reverse))
    hid = p.hidden
    native = p.native(["Sigmoid", "Tanh", "Tanh"])
    ys, finals = [], []
    for d in range(len(p.reverse)):
        biases = p.bias_parts(b, d, 4)
        xw = p.projected(b, d, None if biases is None else b.op("add", list(biases)), per_row_reverse=not native)
        if native:
            peep_d = take(b, peep, 0, d) if peep is not None else p.zeros(b, 3 * hid)
            y, h, c = p.run_native(b, d, "lstm", xw, p.packed_weights(b, d, 4),
                                   [p.initial(b, 0, d), p.initial(b, 1, d), peep_d])
            ys.append(y)
            finals.append((h, c))
            continue
        rt = b.op("transpose", [take(b, p.r, 0, d)], perm=(1, 0))
        pi = po = pf = None
        if peep is not None:
            pd = take(b, peep, 0, d)
            pi, po, pf = (_part(b, pd, k, hid) for k in range(3))
        f, g, hf = acts[d]
        h, c = p.initial(b, 0, d), p.initial(b, 1, d)
        y = []
        for t in p.order(d):
            gates = b.op("add", [take(b, xw, 0, t), b.op("matmul", [h, rt])])
            gi, go, gf, gc = (_part(b, gates, k, hid) for k in range(4))
            if pi is not None:
                gi = b.op("add", [gi, b.op("mul", [pi, c])])
                gf = b.op("add", [gf, b.op("mul", [pf, c])])
            i = f(b, p.clipped(b, gi))
            fg = f(b, p.clipped(b, gf))
            cand = g(b, p.clipped(b, gc))
            c_new = b.op("add", [b.op("mul", [fg, c]), b.op("mul", [i, cand])])
            if po is not None:
                go = b.op("add", [go, b.op("mul", [po, c_new])])
            o = f(b, p.clipped(b, go))
            h_new = b.op("mul", [o, hf(b, c_new)])
            c = _keep(b, p.valid(b, t), c_new, c)
            h = p.advance(b, t, h_new, h, y)
        ys.append(y)
        finals.append((h, c))
    return p.assemble(b, ys, finals) if native else p.outputs(b, ys, finals)


def _reverse_sequence_node(b, n, ins, opset):
    at = attrs_of(n)
    x, lens = ins
    rank = x.type.rank
    t_axis, b_axis = int(at.get("time_axis", 0)), int(at.get("batch_axis", 1))
    if rank < 2 or {t_axis, b_axis} != {0, 1}:
        raise ShapeError(f"ReverseSequence needs time_axis and batch_axis to be 0 and 1 (in either order) on an "
                         f"input of rank >= 2, got {t_axis}, {b_axis} on rank {rank}")
    return reverse_sequence(b, x, lens, t_axis, b_axis)


RECURRENT = {"RNN": _rnn, "GRU": _gru, "LSTM": _lstm, "ReverseSequence": _reverse_sequence_node}
