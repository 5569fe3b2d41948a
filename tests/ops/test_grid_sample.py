"""GridSample in every mode and padding mode, aligned or not, 2-d and 3-d, against
onnx.reference; grid points reach well outside [-1, 1] so every padding rule is exercised."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .harness import check, node_model
from .strategies import Domain, examples, gen, pick_consts, rng_from


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@examples(6)
@given(data=st.data())
def test_grid_sample(mode, padding, data):
    rng = rng_from(data)
    nsp = 2 if mode == "cubic" else data.draw(st.integers(2, 3), label="spatial_rank")   # (cubic: 2-d only)
    align = data.draw(st.integers(0, 1), label="align_corners")
    lo = 2 if align else 1     # (onnx.reference divides by zero reflecting a 1-pixel aligned axis)
    spatial = [data.draw(st.integers(lo, 6), label="in") for _ in range(nsp)]
    out = [data.draw(st.integers(1, 5), label="out") for _ in range(nsp)]
    n, c = data.draw(st.integers(1, 2), label="n"), data.draw(st.integers(1, 3), label="c")
    x = gen(rng, "float32", [n, c] + spatial, Domain(low=-3.0, high=3.0))
    grid = gen(rng, "float32", [n] + out + [nsp], Domain(low=-1.6, high=1.6))
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    check(*node_model("GridSample", [("x", x), ("grid", grid)], attrs, opset=20,
                      const=pick_consts(data, ["x", "grid"])), kind="transcendental", scale=8.0)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@examples(8)
@given(data=st.data())
def test_roi_align(mode, ctm, data):
    import numpy as np
    rng = rng_from(data)
    n, c = data.draw(st.integers(1, 2), label="n"), data.draw(st.integers(1, 3), label="c")
    h, w = data.draw(st.integers(1, 9), label="h"), data.draw(st.integers(1, 9), label="w")
    r = data.draw(st.integers(1, 4), label="rois")
    x = gen(rng, "float32", [n, c, h, w], Domain(low=-2.0, high=2.0))
    # regions partly outside the image too, corners in either order of size
    p = rng.uniform(-2, max(h, w) + 2, (r, 2)).astype(np.float32)
    size = rng.uniform(0, max(h, w), (r, 2)).astype(np.float32)
    rois = np.concatenate([p, p + size], axis=1).astype(np.float32)
    batch = rng.integers(0, n, r).astype(np.int64)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm,
             "output_height": data.draw(st.integers(1, 4), label="oh"),
             "output_width": data.draw(st.integers(1, 4), label="ow"),
             "sampling_ratio": data.draw(st.integers(1, 3), label="ratio"),
             "spatial_scale": data.draw(st.sampled_from([1.0, 0.5]), label="scale")}
    check(*node_model("RoiAlign", [("x", x), ("rois", rois), ("batch", batch)], attrs, opset=16,
                      const=pick_consts(data, ["rois", "batch"])), kind="transcendental", scale=8.0)
