"""Time ONNX models on ONNX Runtime: the measurement protocol, run in a fresh process.

This file is run as a script (``python _ort_runner.py REQUEST.json``) by
:mod:`nas.evaluators._latency`, so each repetition of the protocol starts from a
fresh interpreter: no warm caches, no allocator state, no torch in the process.
It imports only the standard library, numpy and onnxruntime. It reads a JSON
request and prints one JSON line: per model, the timed runs' p10 / median /
p90 in milliseconds (and, with a reference model, the candidate/reference ratio
of medians of interleaved runs), or the error ONNX Runtime raised.

The protocol (per model): a session with ``threads`` intra-op threads,
sequential execution and every graph optimization; input and output bound once
with IOBinding; warm-up runs until both ``warmup_runs`` runs and
``warmup_seconds`` have passed; then ``runs`` timed runs.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def make_session(
    model: str | bytes, provider: str, threads: int, optimized_path: str | None = None
) -> Any:
    """An ONNX Runtime session under the protocol's options.

    ``optimized_path``: where ORT writes the graph it really runs (after its fusions).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = optimized_path
    providers = [PROVIDERS[provider]]
    if provider != "cpu":
        providers.append("CPUExecutionProvider")
    return ort.InferenceSession(model, options, providers=providers)


class _Bound:
    """A session with its input and output bound once (IOBinding)."""

    def __init__(self, session: Any, provider: str) -> None:
        import numpy as np
        import onnxruntime as ort

        self.session = session
        device = "cpu" if provider == "cpu" else "cuda"
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        self.binding = session.io_binding()
        self.binding.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(x, device, 0))
        for out in session.get_outputs():
            self.binding.bind_output(out.name, device)

    def run(self) -> float:
        """One run; its wall time in milliseconds."""
        start = time.perf_counter_ns()
        self.session.run_with_iobinding(self.binding)
        return (time.perf_counter_ns() - start) / 1e6


def _warm(models: list[_Bound], runs: int, seconds: float) -> None:
    start, n = time.perf_counter(), 0
    while n < runs or time.perf_counter() - start < seconds:
        for m in models:
            m.run()
        n += 1


def _percentiles(times: list[float]) -> dict[str, float]:
    import numpy as np

    p10, p50, p90 = np.percentile(np.asarray(times), [10, 50, 90])
    return {"p10_ms": float(p10), "median_ms": float(p50), "p90_ms": float(p90)}


def measure(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the protocol on every model of ``request``; one result dict per model."""
    provider, threads = request["provider"], int(request["threads"])
    reference = None
    if request.get("reference"):
        reference = _Bound(make_session(request["reference"], provider, threads), provider)
    results: list[dict[str, Any]] = []
    for path in request["models"]:
        try:
            model = _Bound(make_session(path, provider, threads), provider)
            model.run()  # some errors (a shape mismatch) show only when it runs
        except Exception as exc:  # onnxruntime raises its own exception types
            results.append({"error": _first_line(exc)})
            continue
        bound = [model] + ([reference] if reference else [])
        _warm(bound, int(request["warmup_runs"]), float(request["warmup_seconds"]))
        times, ref_times = [], []
        for _ in range(int(request["runs"])):
            times.append(model.run())
            if reference is not None:  # interleaved: both see the same machine state
                ref_times.append(reference.run())
        result = _percentiles(times)
        if ref_times:
            result["reference_median_ms"] = _percentiles(ref_times)["median_ms"]
        results.append(result)
    return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as f:
        request = json.load(f)
    print(json.dumps({"results": measure(request)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
