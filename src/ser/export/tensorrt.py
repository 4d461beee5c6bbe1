"""TensorRT engines from a bundle's graph: what TensorRT's ONNX parser takes, the optimisation profiles,
the build, and the rules for whether a plan may run on a given machine.

A plan is compiled for one GPU architecture and one TensorRT version; running it elsewhere fails or,
worse, runs slowly. So the manifest records both, and `plan_compatibility` decides before any plan
is deserialized. The network is built *strongly typed*: each tensor keeps the type the ONNX graph
gives it, so an FP16 or INT8 (QDQ) engine computes in exactly the precision that was validated
against PyTorch, and no precision flags or implicit INT8 calibrators are involved (weak typing was
deprecated in TensorRT 10.12 and is gone in 11, where the strongly-typed flag is accepted and implied).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import onnx

from ser.audio import SAMPLE_RATE
from ser.runtime.tensorrt import GpuTarget, Profile, current_target, unavailable_reason
from ser.staging import write_atomic

# ONNX operators TensorRT's ONNX parser supports ("Y" rows of docs/operators.md in onnx/onnx-tensorrt at
# the "ONNX-TensorRT 10.1 GA release" commit 96e7811, 2024-06-17), for the default ONNX domain, opsets 9-20.
SUPPORTED_OPS = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike
    Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
    GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
    GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
    IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
    MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not
    OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
    RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
    ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
    Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
    Transpose Trilu Unsqueeze Upsample Where Xor""".split()  # noqa: SIM905 (the table, as the docs list it)
)
OPSETS = range(9, 21)
# The same table's restrictions that a graph can break: (op, input index) that must be a constant.
CONSTANT_INPUTS = {
    "CumSum": (1, "axis"),
    "Dropout": (2, "training_mode"),
    "Pad": (3, "axes"),
    "Slice": (3, "axes"),
    "Squeeze": (1, "axes"),
    "Unsqueeze": (1, "axes"),
    **{
        op: (1, "axes")
        for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
                   "ReduceProd", "ReduceSum", "ReduceSumSquare")
    },
}  # fmt: skip


class TensorRTError(RuntimeError):
    """A graph TensorRT cannot take, a build that failed, or a plan that must not run here."""


def parser_problems(model: onnx.ModelProto) -> list[str]:
    """Why TensorRT's ONNX parser would refuse `model`, one line per kind of problem; empty if it would not.

    Checks operators (contrib domains such as ONNX Runtime's com.microsoft are not TensorRT's), the
    opset, and the inputs the parser needs as constants.
    """
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset not in OPSETS:
        problems.append(f"opset {opset}: TensorRT 10 parses opsets {OPSETS.start}-{OPSETS.stop - 1}")
    unknown = Counter(
        f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        for node in model.graph.node
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS
    )
    problems += [f"{op} × {count}: not an operator TensorRT's ONNX parser supports" for op, count in unknown.items()]
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    for node in model.graph.node:
        index, what = CONSTANT_INPUTS.get(node.op_type, (None, ""))
        if index is not None and len(node.input) > index and node.input[index] and node.input[index] not in constants:
            problems.append(f"{node.op_type} {node.name!r}: its {what} input must be a constant for TensorRT")
    return problems


def plan_profiles(
    max_batch: int = 32, min_seconds: float = 0.5, opt_seconds: float = 4.0, max_seconds: float = 30.0
) -> tuple[Profile, ...]:
    """Several narrow profiles instead of one wide one: TensorRT picks kernels for a profile's `opt`
    shape, and a single 0.5-30 s × 1-32 profile is tuned for none of the shapes it will see.

    Clip lengths are cut into bands that double from `opt_seconds` (min-opt, opt-2·opt, 2·opt-4·opt, …
    up to max), each tuned at its geometric middle except the first, tuned at `opt_seconds` (the
    typical clip). Batch is split into batch 1 (latency) and 2-max_batch tuned at max_batch
    (throughput).
    """
    if not (0 < min_seconds <= opt_seconds <= max_seconds):
        raise ValueError(
            f"need 0 < --min-seconds ≤ --opt-seconds ≤ --max-seconds, got {min_seconds}, {opt_seconds}, {max_seconds}"
        )
    if max_batch < 1:
        raise ValueError(f"--max-batch must be at least 1, got {max_batch}")
    edges = [min_seconds, opt_seconds]
    while edges[-1] < max_seconds:
        edges.append(min(2 * edges[-1], max_seconds))
    edges = [e for i, e in enumerate(edges) if i == 0 or e > edges[i - 1]]
    bands = []
    for index, (low, high) in enumerate(itertools.pairwise(edges)):
        opt = opt_seconds if index == 0 else math.sqrt(low * high)
        bands.append(tuple(round(s * SAMPLE_RATE) for s in (low, opt, high)))
    if len(edges) == 1:  # min == opt == max: one fixed length
        bands.append((round(min_seconds * SAMPLE_RATE),) * 3)
    batches = [(1, 1, 1)] + ([(2, max_batch, max_batch)] if max_batch > 1 else [])
    return tuple(Profile(batch, samples) for batch in batches for samples in bands)


def tensorrt_ready() -> None:
    """Raise TensorRTError saying what is missing unless TensorRT, cuda-python and a GPU are all here."""
    reason = unavailable_reason()
    if reason is not None:
        raise TensorRTError(reason)


def plan_name(target: GpuTarget) -> str:
    """One plan file per GPU architecture and TensorRT version, so a bundle can carry several."""
    return f"model.sm{target.compute_capability.replace('.', '')}.trt{target.tensorrt}.plan"


def build_engine(
    onnx_path: Path,
    folder: Path,
    profiles: tuple[Profile, ...],
    timing_cache: Path | None = None,
    workspace_gib: float = 8.0,
    hardware_compatible: bool = False,
) -> dict[str, Any]:
    """Build a strongly typed engine from `onnx_path` into `folder` (named for this GPU and TensorRT by
    `plan_name`); returns its manifest record.

    The timing cache (kernel timings per layer and shape) is read before and written back after, so
    rebuilding for another bundle on the same GPU skips most of the autotuning.
    """
    problems = parser_problems(onnx.load(str(onnx_path), load_external_data=False))
    if problems:
        raise TensorRTError(f"{onnx_path}: TensorRT cannot parse this graph: " + "; ".join(problems))
    tensorrt_ready()
    import tensorrt as trt

    target = current_target()
    plan_path = folder / plan_name(target)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: TensorRT's parser refused the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    for profile in profiles:
        optimization = builder.create_optimization_profile()
        for name, (low, opt, high) in profile.shapes().items():
            optimization.set_shape(name, low, opt, high)
        config.add_optimization_profile(optimization)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"{onnx_path}: TensorRT could not build an engine (see the log above)")
    write_atomic(plan_path, bytes(plan))
    if timing_cache is not None:
        write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return {
        "file": plan_path.name,
        "target": asdict(target),
        "hardware_compatibility": "ampere+" if hardware_compatible else "none",
        "version_compatible": False,
        "profiles": [asdict(p) for p in profiles],
        "build_s": round(time.perf_counter() - started, 1),
    }
