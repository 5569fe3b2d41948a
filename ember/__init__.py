"""Ember: an ONNX inference compiler. `ember.InferenceSession(model)` works like onnxruntime's."""
__version__ = "0.1.0"

from .errors import (CompileError, EmberError, InvalidInputError, ModelLoadError, ShapeError,
                     UnsupportedOpError)
from .runtime.iobinding import IOBinding
from .runtime.session import InferenceSession, NodeArg, SessionOptions
from .lang import kernel
from .lang.custom_op import custom_op, unregister_op

__all__ = ["kernel", "custom_op", "unregister_op", "InferenceSession", "SessionOptions", "NodeArg", "IOBinding", "EmberError", "ModelLoadError",
           "UnsupportedOpError", "ShapeError", "InvalidInputError", "CompileError", "__version__"]
