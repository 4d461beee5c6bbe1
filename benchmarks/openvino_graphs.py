"""Which INT8 graph a CPU engine should run for a ser bundle: graphs written different ways (the QDQ graph
ser ships, after ONNX Runtime's fusions; the same without them; an earlier way of quantizing), each on
OpenVINO and on ONNX Runtime, beside an IR quantized by NNCF.

    python benchmarks/openvino_graphs.py --bundle LABEL=BUNDLE [--bundle LABEL=BUNDLE ...]
        [--nncf IR_FOLDER] [--rounds 10] [--threads 2] [--seconds S ...] [--profile N] [--out FILE.json]

Each `--bundle` is a ser bundle folder under a label: `ser-export --int8 static` (as shipped), with
`--no-optimize` (standard ONNX operators only, nothing of ONNX Runtime's contrib set for OpenVINO's
frontend to decompose), or from another commit. `--nncf`: an IR folder from
ser.bench.peers.export_openvino (NNCF's own placement of the quantizers, on OpenVINO's conversion of the
checkpoint). Every backend is loaded at once and timed in interleaved rounds (two warm-up calls per case
first, a 50 ms pause before each call as in ser-bench, so one engine's spinning threads do not slow the
next) on clips of synthetic speech (`--seconds`, default 4) at batch 1 and 4; p50 in ms. Speed only: with
random weights the answers say nothing. ser's OpenVINO backend compiles a repeated shape for that shape alone
(on its second call, so within the warm-up); `--shapes` adds the same backend with that turned off, and NNCF's
IR compiled for each case's shape as its user could by hand, so both ways are timed for both graphs.
`--profile N` then compiles each OpenVINO graph again with per-node counters and sums, over N calls at
batch 4 × 4 s, the time of each kind of node (its type and the kernel OpenVINO chose), so two graphs can be
compared where their time goes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ser.bench.environment import cpu_info
from ser.bench.peers import IR_NAME
from ser.bench.peers import OpenVinoBackend as NncfIr
from ser.bundle import Bundle
from ser.data.signals import synthetic_voice
from ser.runtime.onnxrt import OnnxRuntimeBackend
from ser.runtime.openvino import OpenVinoBackend, compile_for_cpu, read_bundle_graph

SAMPLE_RATE = 16_000


def feeds_for(batch: int, seconds: float) -> dict[str, np.ndarray]:
    samples = int(seconds * SAMPLE_RATE)
    audio = np.stack([synthetic_voice(samples, seed=i) for i in range(batch)]).astype(np.float32)
    return {"audio": audio, "lengths": np.full(batch, samples, dtype=np.int64)}


def node_times_ms(model: Any, threads: int, feeds: dict[str, np.ndarray], calls: int) -> dict[str, float]:
    """Milliseconds per call spent in each kind of node ("type/kernel"), summed over the graph, largest first."""
    compiled = compile_for_cpu(model, threads, perf_count=True)
    request = compiled.create_infer_request()
    inputs = [feeds["audio"], feeds["lengths"]]
    request.infer(inputs)
    totals: dict[str, float] = {}
    for _ in range(calls):
        request.infer(inputs)
        for node in request.profiling_info:
            key = f"{node.node_type}/{node.exec_type}"
            totals[key] = totals.get(key, 0.0) + node.real_time.total_seconds() * 1000 / calls
    return {key: round(ms, 2) for key, ms in sorted(totals.items(), key=lambda kv: -kv[1]) if ms >= 0.01}


class NncfIrPerShape:
    """NNCF's IR reshaped to each input shape and compiled for it (what `static_shapes` does for ser's graph)."""

    def __init__(self, folder: Path, threads: int):
        self.folder, self.threads, self._compiled = folder, threads, {}

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        self._compiled.clear()

    def infer(self, feeds: dict[str, np.ndarray]) -> Any:
        import openvino as ov

        shape = feeds["audio"].shape
        if shape not in self._compiled:
            model = ov.Core().read_model(str(self.folder / IR_NAME))
            model.reshape({model.inputs[0]: list(shape), model.inputs[1]: [shape[0]]})
            self._compiled[shape] = compile_for_cpu(model, self.threads)
        return self._compiled[shape]([feeds["audio"], feeds["lengths"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", required=True, metavar="LABEL=BUNDLE")
    parser.add_argument("--nncf", type=Path)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, action="append", help="clip length (repeatable; default 4)")
    parser.add_argument("--shapes", action="store_true", help="also both graphs without and with a compile per shape")
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    bundles = dict(item.split("=", 1) for item in args.bundle)
    backends = {}
    for name, folder in bundles.items():
        bundle = Bundle.load(folder)
        backends[f"openvino-cpu, ser QDQ {name}"] = OpenVinoBackend(
            bundle.onnx_path, bundle.manifest.inputs, args.threads
        )
        if args.shapes:
            backends[f"openvino-cpu, ser QDQ {name}, dynamic only"] = OpenVinoBackend(
                bundle.onnx_path, bundle.manifest.inputs, args.threads, static_shapes=0
            )
        backends[f"onnxruntime-cpu, ser QDQ {name}"] = OnnxRuntimeBackend(
            bundle.onnx_path, bundle.manifest.inputs, threads=args.threads
        )
    if args.nncf:
        backends["openvino, NNCF IR"] = NncfIr(args.nncf, threads=args.threads)
        if args.shapes:
            backends["openvino, NNCF IR, compiled per shape"] = NncfIrPerShape(args.nncf, args.threads)
    for backend in backends.values():
        backend.activate()
    p50_ms: dict[str, dict[str, float]] = {key: {} for key in backends}
    cases = [(batch, seconds) for seconds in args.seconds or [4.0] for batch in (1, 4)]
    for batch, seconds in cases:
        feeds = feeds_for(batch, seconds)
        samples: dict[str, list[float]] = {key: [] for key in backends}
        for backend in backends.values():
            backend.infer(feeds)
            backend.infer(feeds)
        keys = list(backends)
        for round_ in range(args.rounds):
            for key in keys[round_ % len(keys) :] + keys[: round_ % len(keys)]:
                time.sleep(0.05)
                started = time.perf_counter()
                backends[key].infer(feeds)
                samples[key].append(time.perf_counter() - started)
        for key, values in samples.items():
            p50_ms[key][f"{batch} x {seconds:g} s"] = round(1000 * statistics.median(values), 1)
    inputs = {**bundles, "nncf": str(args.nncf)}
    report = {"machine": cpu_info(), "threads": args.threads, "rounds": args.rounds, "p50_ms": p50_ms, "inputs": inputs}
    print("| engine, graph | " + " | ".join(f"{b} × {s:g} s" for b, s in cases) + " |")
    print("|---|" + "---:|" * len(cases))
    for key, cells in p50_ms.items():
        print(f"| {key} | " + " | ".join(f"{ms} ms" for ms in cells.values()) + " |")
    if args.profile:
        for backend in backends.values():
            backend.deactivate()
        # ser's graphs as OpenVinoBackend runs them (lowered), NNCF's IR as it is
        graphs = {f"ser QDQ {name}": read_bundle_graph(Bundle.load(path).onnx_path) for name, path in bundles.items()}
        if args.nncf:
            graphs["NNCF IR"] = args.nncf / IR_NAME
        feeds = feeds_for(4, 4.0)
        profile = {label: node_times_ms(path, args.threads, feeds, args.profile) for label, path in graphs.items()}
        report["profile_4x4s_ms_per_call"] = profile
        kinds = {k for times in profile.values() for k in times}
        kinds = sorted(kinds, key=lambda k: -max(t.get(k, 0) for t in profile.values()))
        print("\n| node type/kernel (ms per call, 4 × 4 s) | " + " | ".join(profile) + " |")
        print("|---|" + "---:|" * len(profile))
        for kind in kinds[:40]:
            print(f"| {kind} | " + " | ".join(f"{times.get(kind, 0):.1f}" for times in profile.values()) + " |")
        print("| total | " + " | ".join(f"{sum(times.values()):.1f}" for times in profile.values()) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
