"""The contract between search and runtime: the plan and the search space, the
op vocabulary and its lowering to conv chains, the model file, the ONNX graph,
the latency table and the pure latency model. Needs numpy only: no torch, no
compiled code (a lint rule enforces it)."""
