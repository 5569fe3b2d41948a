"""Ember operator conformance suite.

Every test builds small ONNX models (mostly single nodes, some fused chains), runs them on
the engine under test and on ``onnx.reference.ReferenceEvaluator``, and compares all
outputs (dtype, shape, values).  Shapes, attributes and data are drawn by hypothesis
(derandomized: the same examples on every run).

    python -m pytest tests/ops -q                          # against Ember
    EMBER_TEST_ENGINE=ort python -m pytest tests/ops -q    # validate the suite on onnxruntime

Knobs: EMBER_TEST_EXAMPLES_SCALE (multiply every test's example count, e.g. 5 for a soak
run), EMBER_TEST_DUMP_DIR (write each failing model + feeds there as .onnx/.npz).
Cases onnxruntime cannot run are skipped under ``ort`` only (harness.ort_skip), never for Ember.
"""
