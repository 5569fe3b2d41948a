"""Arena planning: place every intermediate buffer in one arena, reusing memory between
buffers whose lifetimes (first..last kernel) do not overlap. Runs once per input-shape
signature, on concrete sizes (greedy by size, best offset), and is cached by the session."""
from __future__ import annotations

ALIGN = 64


def plan_arena(buffers):
    """buffers: [(key, nbytes, first, last)] -> ({key: offset}, arena_bytes)."""
    order = sorted(buffers, key=lambda b: (-b[1], b[2]))
    placed = []           # (offset, end, first, last)
    offsets = {}
    total = 0
    for key, nbytes, first, last in order:
        size = (max(int(nbytes), 1) + ALIGN - 1) // ALIGN * ALIGN
        clashes = sorted((o, e) for o, e, f, l in placed if not (l < first or last < f))
        off = 0
        for o, e in clashes:
            if off + size <= o:
                break
            off = max(off, e)
        placed.append((off, off + size, first, last))
        offsets[key] = off
        total = max(total, off + size)
    return offsets, total
