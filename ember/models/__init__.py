"""Real-world model helpers (exporters, tokenizers) for tests and benchmarks.

Submodules import torch / transformers lazily; importing ember.models does not.
"""
