"""`ember serve`: a model server for models compiled by Ember.

- `repository`: a Triton-style model repository and each model's config; `ServedModel`.
- `protocol`: KServe v2 tensors (JSON and the binary extension).
- `batching`: the dynamic batcher; `core`: what both endpoints share (lookup, limits, metrics).
- `http`: the FastAPI app (KServe v2, OpenAI-style /v1/embeddings, /metrics);
  `grpc_server`: KServe v2 over gRPC; `server`: both on one event loop under uvicorn.

Its dependencies are the `serve` extra: `pip install 'ember[serve]'`."""
