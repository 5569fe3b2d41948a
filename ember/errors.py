"""Every error Ember raises on purpose is an EmberError: the message names what was
wrong (node, input, file) and what was expected, so users never need a stack trace."""


class EmberError(Exception):
    """Base class of all errors Ember raises deliberately."""


class ModelLoadError(EmberError):
    """The model file or bytes could not be read as a valid ONNX model."""


class UnsupportedOpError(EmberError):
    """The model uses operators (or attributes) Ember does not implement.

    `nodes` lists (node_name, op_type, reason) for every offending node."""

    def __init__(self, nodes):
        self.nodes = list(nodes)
        lines = [f"  - node '{n}' ({op}): {why}" for n, op, why in self.nodes]
        super().__init__(
            f"the model uses {len(self.nodes)} node(s) Ember cannot compile:\n" + "\n".join(lines)
            + "\nRe-export the model with supported ops, or register a custom op.")


class ValueDependentError(UnsupportedOpError):
    """A node needs, when compiling, the value of graph inputs (a shape, axes, a count):
    `InferenceSession` then compiles a variant per value of `inputs` (names)."""

    def __init__(self, nodes, inputs):
        super().__init__(nodes)
        self.inputs = tuple(inputs)


class DimDependentError(UnsupportedOpError):
    """A node needs, when compiling, values computed from input dims alone (an If on a shape,
    a trip count): `InferenceSession` then compiles a variant per value of those dims
    (`symbols`, their names)."""

    def __init__(self, nodes, symbols):
        super().__init__(nodes)
        self.symbols = tuple(symbols)


class DataDependentError(UnsupportedOpError):
    """A node's output shape depends on values computed from data (NonZero): `InferenceSession`
    then runs the model in native stages split at `node` (runtime/staged.py)."""

    def __init__(self, nodes, node):
        super().__init__(nodes)
        self.node = node


class StructuredIOError(UnsupportedOpError):
    """The graph takes or returns sequences or optionals: `InferenceSession` then flattens
    them to tensors at its boundary (runtime/structured.py)."""

    def __init__(self, names):
        super().__init__([(n, "graph input/output", "a sequence or optional; InferenceSession flattens it to "
                                                    "tensors (load_onnx alone takes tensors only)") for n in names])
        self.names = tuple(names)


class ShapeError(EmberError):
    """Shapes or types in the graph are inconsistent (names the node)."""


class InvalidInputError(EmberError):
    """A feed passed to `run` is unknown, missing, or has the wrong dtype/rank/shape."""


class CompileError(EmberError):
    """Native code generation failed (a bug in Ember: please report it)."""


class LoopIRError(CompileError):
    """A lowering produced malformed loop IR (`ember.codegen.loop_ir.verify`): an Ember bug,
    or a kernel-language kernel that uses a name outside its scope."""


class KernelError(EmberError):
    """A kernel-language function could not be compiled: the message gives file:line:column,
    the source line with a caret under the offending construct, and what to write instead."""

    def __init__(self, message, filename=None, lineno=None, col=None, source_line=None):
        self.filename, self.lineno, self.col = filename, lineno, col
        self.reason = message
        if filename is not None and lineno is not None:
            loc = f"{filename}:{lineno}:{(col or 0) + 1}: {message}"
            if source_line:
                stripped = source_line.rstrip("\n")
                indent = len(stripped) - len(stripped.lstrip())
                loc += f"\n    {stripped.strip()}\n    {' ' * max((col or 0) - indent, 0)}^"
            message = loc
        super().__init__(message)


class CacheWarning(UserWarning):
    """A disk-cache entry failed verification (truncated, overwritten, or from another
    build): it is ignored and rebuilt, never loaded."""
