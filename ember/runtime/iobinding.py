"""`IOBinding`: onnxruntime's way to run with inputs and outputs bound in advance.

Outputs bound to caller memory (or left to Ember and then kept between runs) are written in
place, so a run allocates nothing: a fresh 64 MB output costs more in page faults than the
kernel that fills it. The session validates bound buffers against the model, naming the
output and what was expected, before any kernel writes to them.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ..errors import InvalidInputError


def _array_at(name, ptr, element_type, shape, what):
    if element_type is None or shape is None:
        raise InvalidInputError(f"{what} '{name}': binding a buffer_ptr needs element_type and shape")
    dtype = np.dtype(element_type)
    shape = tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = (ctypes.c_char * max(nbytes, 1)).from_address(int(ptr))
    return np.frombuffer(raw, dtype=dtype, count=nbytes // dtype.itemsize).reshape(shape)


class IOBinding:
    """Returned by `InferenceSession.io_binding()`; run it with `run_with_iobinding`."""

    def __init__(self, session):
        self._session = session
        self._inputs: dict = {}
        self._outputs: dict = {}          # name -> caller's array, or None: Ember allocates (and keeps)
        self._kept: dict = {}             # name -> the array Ember allocated, reused while its shape holds
        self._results: list | None = None

    # -- inputs -------------------------------------------------------------------------
    def bind_cpu_input(self, name, arr):
        self._session._input_index(name)
        self._inputs[name] = arr

    def bind_input(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        _cpu_only(device_type, name)
        self._session._input_index(name)
        self._inputs[name] = _array_at(name, buffer_ptr, element_type, shape, "input")

    # -- outputs ------------------------------------------------------------------------
    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        """With buffer_ptr: results go to that memory (element_type and shape must match the
        model's output for the bound inputs). Without: Ember allocates the output on the first
        run and writes later runs of the same shape into it (copy what you keep:
        `copy_outputs_to_cpu`)."""
        _cpu_only(device_type, name)
        self._session._output_index(name)
        self._outputs[name] = (None if buffer_ptr is None
                               else _array_at(name, buffer_ptr, element_type, shape, "output"))

    def bind_output_array(self, name, arr: np.ndarray):
        """Ember's shorthand for bind_output with a NumPy array's memory."""
        self._session._output_index(name)
        if not isinstance(arr, np.ndarray):
            raise InvalidInputError(f"output '{name}': expected a numpy.ndarray, got {type(arr).__name__}")
        self._outputs[name] = arr

    def clear_binding_inputs(self):
        self._inputs.clear()

    def clear_binding_outputs(self):
        self._outputs.clear()
        self._kept.clear()
        self._results = None

    def synchronize_inputs(self):
        pass

    def synchronize_outputs(self):
        pass

    # -- results ------------------------------------------------------------------------
    def get_outputs(self) -> list:
        """The bound outputs of the last run, in binding order (the arrays written in place)."""
        if self._results is None:
            raise InvalidInputError("no results yet: call session.run_with_iobinding(binding) first")
        return list(self._results)

    def copy_outputs_to_cpu(self) -> list:
        return [np.array(a, copy=True) for a in self.get_outputs()]


def _cpu_only(device_type, name):
    if str(device_type).lower() != "cpu":
        raise InvalidInputError(f"'{name}': Ember runs on the CPU; bind with device_type='cpu', "
                                f"not {device_type!r}")
