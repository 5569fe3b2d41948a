"""The examples give the answers they claim (small sizes; the timings live in the examples)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


@pytest.mark.parametrize("h, w, iters", [(37, 101, 37), (24, 96, 200), (9, 7, 1)])
def test_mandelbrot_counts_identical_to_cpython(h, w, iters):
    from mandelbrot import mandelbrot_ember, mandelbrot_numpy, mandelbrot_python
    ref = mandelbrot_python(h, w, iters)
    for threads in (1, 2):
        assert np.array_equal(mandelbrot_ember(h, w, iters, threads), ref)
    assert np.array_equal(mandelbrot_numpy(h, w, iters), ref)


def test_custom_activation_example(capsys):
    import custom_activation
    assert custom_activation.main() == 0
    out = capsys.readouterr().out
    assert "ops [matmul, add, example.ops.Mish, mul]" in out
