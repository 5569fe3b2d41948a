from .basic import PIPELINE, cse, dead_code, decompose, fold_constants, optimize, simplify
from .driver import rewrite, run_pipeline

__all__ = ["PIPELINE", "cse", "dead_code", "decompose", "fold_constants", "optimize", "simplify",
           "rewrite", "run_pipeline"]
