"""Helpers for kernels over stride-2 windows (inlined where they are called).

A vector of `width` outputs at stride 2 reads input columns col + 2j + t (lanes j, taps t):
two windows of 2*width columns, from col and from col + 2, loaded once and de-interleaved by
even/odd shuffles give taps t = 0..3 as contiguous lanes, where per-tap loads would each be
a masked, de-interleaving load of their own.
"""
from __future__ import annotations

from ..lang import shuffle


def window_masks(lane, col, w_n, width):
    """Which lanes of the two windows (from col, col + width, col + 2, col + 2 + width) lie
    inside columns [0, w_n); col >= -1, so only the first can start left of the image."""
    return [(lane + col >= 0) & (lane + col < w_n), lane + (col + width) < w_n,
            lane + (col + 2) < w_n, lane + (col + 2 + width) < w_n]


def interior_end(n_out, n_in, width, stride):
    """The vectors of outputs [width, end) (starts that are multiples of width) whose 3-column
    windows (padding 1) lie inside the input row and whose outputs inside the output row: they
    load and store without lane masks. On AVX2 a masked load or store is `vmaskmovps`, several
    times the cost of a plain one, and the masks take registers the taps need (spills)."""
    last = min(n_out - width, (n_in - 1) // stride - width)     # the last such start, if >= width
    return max(last // width + 1, 1) * width


def across_row(columns, n_out, n_in, width, stride):
    """Calls columns(start, masked) for each vector of outputs along a row: the first and
    those past `interior_end` with lane masks, the others without. Those past interior_end
    come first, so the first vector's stores come after theirs (`store_row`)."""
    end = interior_end(n_out, n_in, width, stride)
    for ow0 in range(end, n_out, width):
        columns(ow0, True)
    for ow0 in range(0, min(n_out, width), width):
        columns(ow0, True)
    for ow0 in range(width, end, width):
        columns(ow0, False)


def store_row(y, b, c, oh, ow0, v, keep, masked, last, n_out, width):
    """Stores the vector v of output row oh (n_out columns) from column ow0 (a kernel's rows
    go top down, its vectors in `across_row`'s order). A masked vector stores whole, except
    on its task's last row (`last`) or where it would reach past the next row: its lanes
    past the row's end land on the next row's first columns, which the first vector stores
    over later (the same vector, if it is the first). On AVX2 a masked store is
    `vmaskmovps`, several times a plain one (a 384-channel 14x14 depthwise layer, both
    vectors of every row masked: 0.090 -> 0.06 ms)."""
    if masked:
        if last or ow0 + width > 2 * n_out:
            y.store(b, c, oh, ow0, v, mask=keep)
        else:
            y.store(b, c, oh, ow0, v)
    else:
        y.store(b, c, oh, ow0, v)


def row_taps(x, b, c, r, col, m, width, masked=True):
    """Columns col + 2j + t of row r of image (b, c), for t = 0..3; 0 outside the masks m
    (`masked` False: every column is inside the row, m is not read)."""
    if masked:
        p0 = x.load[width](b, c, r, col, mask=m[0])
        p1 = x.load[width](b, c, r, col + width, mask=m[1])
        q0 = x.load[width](b, c, r, col + 2, mask=m[2])
        q1 = x.load[width](b, c, r, col + 2 + width, mask=m[3])
    else:
        p0 = x.load[width](b, c, r, col)
        p1 = x.load[width](b, c, r, col + width)
        q0 = x.load[width](b, c, r, col + 2)
        q1 = x.load[width](b, c, r, col + 2 + width)
    return [shuffle(p0, p1, (2 * i for i in range(width))), shuffle(p0, p1, (2 * i + 1 for i in range(width))),
            shuffle(q0, q1, (2 * i for i in range(width))), shuffle(q0, q1, (2 * i + 1 for i in range(width)))]
