"""The benchmark stage: every backend against the original PyTorch model, side by side in one run.

Nothing is imported here: `python -m ser.bench.worker` loads this package, and an ONNX Runtime
worker must not pull in torch through it (ser.bench.suite needs the model registry).
"""
