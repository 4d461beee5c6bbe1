"""Checkpoint → validated bundle folder, the whole export in one call."""

from __future__ import annotations

import logging
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import transformers
from rich.progress import Progress

import ser
from ser.answer import AnswerSpec
from ser.audio import SAMPLE_RATE
from ser.bundle import ONNX_NAME, Bundle, BundleWriter, Manifest, ModelInfo, graph_signature
from ser.export.calibration import AudioFolderReader
from ser.export.gate import Gate, GateResult, Reference, score, search_fp32_fallback
from ser.export.onnx import OPSET, export_onnx
from ser.export.optimize import convert_fp16, optimize_graph, save_model
from ser.export.quantize import OP_TYPES, Int8Options, Quantizer, node_sensitivity
from ser.export.tensorrt import Profile, build_engine, plan_profiles, tensorrt_ready
from ser.export.validate import CASES, MIN_CCC, ExportToleranceError, ValidationReport, validate
from ser.labels import canonical_labels
from ser.models import LoadedModel, load_model
from ser.models.checkpoint import read_config
from ser.models.reference import original_model
from ser.runtime.cpu import cpu_features
from ser.runtime.onnxrt import OnnxRuntimeBackend
from ser.runtime.openvino import OpenVinoBackend
from ser.runtime.openvino import unavailable_reason as openvino_unavailable
from ser.runtime.recognizer import pad_batch
from ser.runtime.tensorrt import TensorRTBackend

log = logging.getLogger(__name__)

SENSITIVITY_CLIPS = 8  # evaluation clips the per-node sensitivity analysis runs on, as one batch
SENSITIVITY_SECONDS = 1.0  # of each: ranking needs the order of the nodes, not every frame (1 s: 50 frames)


@dataclass(frozen=True)
class ExportOptions:
    model: str | None = None  # family name; None: the checkpoint's config.json decides (it must agree anyway)
    checkpoint: str | None = None  # folder or hub id; None: runs/<model>
    size: str | None = None  # with random_init
    random_init: bool = False
    opset: int = OPSET
    tolerance: float | None = None  # max |logit error| (FP32/FP16); None: the model spec's
    optimize: bool = True  # fused attention + ONNX Runtime's fusions
    fp16: bool = False
    int8: Int8Options | None = None
    calibration_data: str | None = None  # folder of audio for static INT8
    eval_data: str | None = None  # folder for the INT8 gate; default: calibration_data
    calibration_clips: int = 300
    eval_clips: int = 300  # the gate's default (99 % shown at 95 % confidence) needs 299 that all agree
    gate: Gate = field(default_factory=Gate)
    seed: int = 0
    trt: TensorRTOptions | None = None  # also build a TensorRT engine into the bundle
    embedding: bool = False  # also output the pooled embedding the head reads (for clustering, search)

    def __post_init__(self) -> None:
        if self.trt is not None:
            if self.optimize:
                raise ValueError(
                    "--trt needs the graph TensorRT's parser takes, without ONNX Runtime's fused operators: "
                    "pass --no-optimize"
                )
            if self.int8 is not None and not (self.int8.mode == "static" and self.int8.symmetric):
                raise ValueError("--trt takes INT8 only as static, symmetric QDQ (--int8 static): TensorRT has no "
                                 "dynamic quantization and no zero points")  # fmt: skip
        if self.fp16 and self.int8 is not None:
            raise ValueError("choose one of --fp16 and --int8")
        if self.int8 is not None and self.int8.mode == "static" and self.calibration_data is None:
            raise ValueError("--int8 static needs calibration audio: pass --calibration-data DIR")
        if self.int8 is not None and self.eval_data is None and self.calibration_data is None:
            raise ValueError(
                "--int8 needs real audio for its accuracy gate: pass --eval-data DIR (or --calibration-data)"
            )
        if self.int8 is not None:
            self.gate.check_clips(self.eval_clips, f"--eval-clips {self.eval_clips}", not _dimensional(self.checkpoint))

    @property
    def graph_source(self) -> tuple:
        """What the FP32 graph depends on: exports that agree here can share one FloatGraph."""
        return (self.model, self.checkpoint, self.size, self.random_init, self.opset, self.optimize, self.tolerance,
                self.embedding)  # fmt: skip

    @property
    def precision(self) -> str:
        if self.int8 is not None:
            return f"int8-{self.int8.mode}"
        return "fp16" if self.fp16 else "fp32"


def _dimensional(checkpoint: str | None) -> bool:
    """Whether a local checkpoint's config.json says regression (dimensions): the gate's clip count depends on
    it. A hub id is checked once loaded (before anything is quantized)."""
    if checkpoint is None or not Path(checkpoint).exists():
        return False
    return read_config(checkpoint).get("problem_type") == "regression"


@dataclass(frozen=True, kw_only=True)  # wired by name: a reordered field cannot mis-wire a caller
class TensorRTOptions:
    max_batch: int = 32
    min_seconds: float = 0.5
    opt_seconds: float = 4.0
    max_seconds: float = 30.0
    timing_cache: str | None = None  # a file kept between builds; None: none
    hardware_compatible: bool = False  # one plan for every Ampere-or-newer GPU (slower)

    def profiles(self) -> tuple[Profile, ...]:
        return plan_profiles(self.max_batch, self.min_seconds, self.opt_seconds, self.max_seconds)


@dataclass
class FloatGraph:
    """A model loaded, traced to ONNX, optimised and validated in FP32: where every precision of its
    bundle starts. Tracing is most of an export's time, so exports of several precisions share one."""

    source: tuple  # ExportOptions.graph_source it was made for
    loaded: LoadedModel
    module: torch.nn.Module
    path: Path
    optimization: dict
    report: ValidationReport  # against ser's PyTorch wrapper, on padded batches
    original: ValidationReport  # against the checkpoint's own class, as its library runs it, clip by clip

    @property
    def name(self) -> str:
        return self.loaded.spec.name

    @classmethod
    def export(cls, options: ExportOptions, work: Path) -> FloatGraph:
        """Trace, optimise and validate `options`' model into `work` (which must outlive the graph)."""
        loaded = load_model(options.model, options.checkpoint, options.size, options.random_init)
        name = loaded.spec.name
        module = loaded.waveform(embedding=options.embedding)
        inputs, _ = graph_signature(len(loaded.labels))
        work.mkdir(parents=True, exist_ok=True)
        path = work / "exported.onnx"
        log.info("exporting %s (%s, %s) to ONNX opset %d", name, loaded.architecture, loaded.size, options.opset)
        attention_layers = export_onnx(module, path, options.opset, fuse_attention=options.optimize)
        optimization: dict = {}
        if options.optimize:
            optimized = work / "optimized.onnx"
            optimization = {"attention_layers": attention_layers, **optimize_graph(path, optimized).to_dict()}
            path = optimized
        log.info("validating the FP32 graph against PyTorch with ONNX Runtime")
        tolerance = loaded.spec.fp32_tolerance if options.tolerance is None else options.tolerance
        min_ccc = _min_ccc(loaded, "fp32")
        report = _validate(path, inputs, module, tolerance, name, min_ccc)
        reference = original_model(loaded)
        log.info("validating the FP32 graph against %s's own forward pass", reference.reference)
        original = _validate(path, inputs, reference, tolerance, name, min_ccc)
        return cls(options.graph_source, loaded, module, path, optimization, report, original)


class FloatGraphs:
    """Float graphs made on first use, one per distinct source, in a folder the caller owns."""

    def __init__(self, work: Path):
        self.work = work
        self._graphs: dict[tuple, FloatGraph] = {}

    def get(self, options: ExportOptions) -> FloatGraph:
        if options.graph_source not in self._graphs:
            folder = self.work / f"graph-{len(self._graphs)}"
            self._graphs[options.graph_source] = FloatGraph.export(options, folder)
        return self._graphs[options.graph_source]


def export_bundle(
    options: ExportOptions,
    out: str | Path,
    overwrite: bool = False,
    show_progress: bool = False,
    graph: FloatGraph | None = None,
) -> Bundle:
    """Load, export to ONNX, optimise, convert/quantize, validate, and write the bundle folder at `out`;
    from `graph` (made for the same `graph_source`) instead of tracing the model again where given.

    Raises ExportToleranceError or ExportGateError (and writes nothing) when the graph (or its TensorRT
    engine) drifts past the tolerance or misses the accuracy gate, TensorRTError when `--trt` cannot be
    done here.
    """
    if options.trt is not None:
        options.trt.profiles()  # a bad range fails now, not after the export
        tensorrt_ready()
    if graph is not None and graph.source != options.graph_source:
        raise ValueError(f"this float graph was made for {graph.source}, not {options.graph_source}")
    with BundleWriter(out, overwrite=overwrite) as writer, tempfile.TemporaryDirectory(prefix="ser-export-") as tmp:
        assert writer.dir is not None
        work = Path(tmp)
        graph = graph or FloatGraph.export(options, work / "graph")
        final, quantization, report = _convert(options, graph, work, show_progress)
        save_model(onnx.load(str(final)), writer.dir / ONNX_NAME)
        engines = ()
        if options.trt is not None:
            inputs = graph_signature(len(graph.loaded.labels))[0]
            engines = (
                _build_engine(writer.dir, options.trt, inputs, graph.module, report.tolerance, report.min_ccc,
                              graph.name),
            )  # fmt: skip
        bundle = writer.commit(_manifest(options, graph, report, quantization, engines))
    log.info(
        "wrote %s (%s): max |error| %.2e, %s",
        bundle.path,
        options.precision,
        report.max_abs_logit_error,
        report.agreement.headline(),
    )
    return bundle


def _convert(
    options: ExportOptions, graph: FloatGraph, work: Path, show_progress: bool
) -> tuple[Path, dict, ValidationReport]:
    """The graph at the options' precision (FP32 as traced, FP16, or INT8 through the gate), what the
    manifest's `quantization` records, and its validation against PyTorch."""
    loaded, module = graph.loaded, graph.module
    inputs = graph_signature(len(loaded.labels))[0]
    if options.fp16:
        final = work / "fp16.onnx"
        quantization = convert_fp16(graph.path, final)
        log.info("validating the FP16 graph against PyTorch")
        tolerance = loaded.spec.fp16_tolerance if options.tolerance is None else options.tolerance
        return final, quantization, _validate(final, inputs, module, tolerance, graph.name, _min_ccc(loaded, "fp16"))
    if options.int8 is not None:
        final, quantization = _quantize(options, module, loaded.answer, graph.path, inputs, work, show_progress)
        with OnnxRuntimeBackend(final, inputs, device="cpu") as backend:  # recorded; the gate decides
            return final, quantization, validate(backend, module, None, min_ccc=_min_ccc(loaded, "fp32"))
    return graph.path, {}, graph.report


def _manifest(
    options: ExportOptions, graph: FloatGraph, report: ValidationReport, quantization: dict, engines: tuple
) -> Manifest:
    loaded = graph.loaded
    inputs, outputs = graph_signature(len(loaded.labels), graph.module.embedding_size)
    return Manifest(
        model=ModelInfo(
            name=graph.name,
            size=loaded.size,
            architecture=loaded.architecture,
            parameters=sum(p.numel() for p in loaded.model.parameters()),
        ),
        labels=loaded.labels,
        canonical_labels=canonical_labels(loaded.labels),
        answer=loaded.answer.to_dict(),
        max_input_s=graph.module.max_input_s,
        sample_rate=SAMPLE_RATE,
        precision=options.precision,
        inputs=inputs,
        outputs=outputs,
        source={**loaded.source, "normalize": loaded.normalize},
        versions={
            "ser": ser.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
            "opset": str(options.opset),
        },
        validation={**report.to_dict(), "original": graph.original.to_dict()},
        optimization=graph.optimization,
        quantization=quantization,
        engines=engines,
    )


def _build_engine(
    folder: Path,
    trt: TensorRTOptions,
    inputs: tuple,
    module: torch.nn.Module,
    tolerance: float | None,
    min_ccc: float | None,
    model: str,
) -> dict:
    """The bundle's own (validated) graph compiled for this machine's GPU, strongly typed, then validated
    against PyTorch like the graph: within the graph's tolerance (INT8: recorded; the gate judged it)."""
    profiles = trt.profiles()
    log.info("building a TensorRT engine (%d optimisation profiles)", len(profiles))
    cache = Path(trt.timing_cache) if trt.timing_cache else None
    record = build_engine(folder / ONNX_NAME, folder, profiles, cache, hardware_compatible=trt.hardware_compatible)
    cases = [case for case in CASES if any(p.covers(len(case), max(case)) for p in profiles)]
    with TensorRTBackend(folder, (record,), inputs) as backend:
        report = validate(backend, module, tolerance, cases, min_ccc)
    if not report.passed:
        raise ExportToleranceError(
            f"{model}: TensorRT outputs differ from PyTorch {report.describe()}; no bundle written"
        )
    return {**record, "validation": report.to_dict()}


def _min_ccc(loaded: LoadedModel, precision: str) -> float | None:
    """The CCC a dimensional model's export must keep (validate.MIN_CCC); None for categories."""
    return None if loaded.answer.is_categorical else MIN_CCC[precision]


def _validate(
    path: Path, inputs: tuple, module: torch.nn.Module, tolerance: float, model: str, min_ccc: float | None
) -> ValidationReport:
    with OnnxRuntimeBackend(path, inputs, device="cpu") as backend:
        report = validate(backend, module, tolerance, min_ccc=min_ccc)
    if not report.passed:
        raise ExportToleranceError(
            f"{model}: ONNX outputs ({path.stem}) differ from {report.reference} {report.describe()}; no bundle written"
        )
    return report


def _graph_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def _quantize(
    options: ExportOptions,
    module: torch.nn.Module,
    answer: AnswerSpec,
    float_path: Path,
    inputs: tuple,
    work: Path,
    show_progress: bool,
) -> tuple[Path, dict]:
    """INT8 through the accuracy gate: returns the passing graph and what the manifest records."""
    assert options.int8 is not None
    int8 = options.int8
    calibration = None
    if int8.mode == "static":
        assert options.calibration_data is not None  # ExportOptions checks it
        calibration = AudioFolderReader.from_folder(options.calibration_data, options.calibration_clips, options.seed)
    eval_folder = options.eval_data or options.calibration_data
    assert eval_folder is not None  # ExportOptions refuses --int8 without either
    # Disjoint from the calibration clips: a verdict on clips the quantizer tuned its ranges to says little.
    exclude = calibration.paths if calibration is not None else ()
    evaluation = AudioFolderReader.from_folder(eval_folder, options.eval_clips, options.seed + 1, exclude=exclude)
    left_out = f" ({evaluation.excluded} more are calibration clips)" if evaluation.excluded else ""
    options.gate.check_clips(
        len(evaluation), f"{evaluation.folder} gives {len(evaluation)} usable clips{left_out}", answer.is_categorical
    )
    log.info("scoring FP32 PyTorch on %d evaluation clips from %s", len(evaluation), evaluation.folder)
    started = time.perf_counter()
    reference = Reference.compute(module, evaluation, answer)
    seconds = {"reference": time.perf_counter() - started, "rank": 0.0}
    if (dominant := reference.dominant_answer()) is not None:
        log.warning(
            "%s: FP32 PyTorch answers %r for %d of %d evaluation clips, so agreement on them shows little about "
            "other speech: evaluate on clips of every class (--eval-data)",
            evaluation.folder, dominant[0], dominant[1], len(evaluation),
        )  # fmt: skip
    with Progress(transient=True, disable=not show_progress) as progress:
        task = progress.add_task("calibrating", total=len(calibration) if calibration else 0)
        quantizer = Quantizer(float_path, int8, calibration, work, on_feed=lambda: progress.advance(task))
        quantizable = quantizer.nodes

        def evaluate(path: Path) -> GateResult:
            with OnnxRuntimeBackend(path, inputs, device="cpu") as backend:
                return score(backend, evaluation, reference, options.gate)

        def rank(path: Path) -> list[str]:
            started = time.perf_counter()
            clips = [clip[: int(SENSITIVITY_SECONDS * SAMPLE_RATE)] for clip in evaluation.clips[:SENSITIVITY_CLIPS]]
            audio, lengths = pad_batch(clips)
            feeds = {"audio": audio, "lengths": lengths}
            sensitivity = node_sensitivity(float_path, path, quantizable, feeds, quantizer.quantize)
            seconds["rank"] = time.perf_counter() - started
            return sorted(sensitivity, key=sensitivity.__getitem__, reverse=True)

        started = time.perf_counter()
        final, fallback = search_fp32_fallback(quantizer.quantize, evaluate, rank, quantizable, options.gate, work)
        seconds["search"] = time.perf_counter() - started  # calibration, ranking, every candidate
    # The graph the gate passed on ONNX Runtime, judged again on every other CPU engine installed here: their INT8
    # kernels compute otherwise, and the runtime runs an INT8 bundle as verified only where its gate passed it.
    judged = {"onnxruntime-cpu": fallback.result.summary()}
    if openvino_unavailable() is None:
        started = time.perf_counter()
        try:
            with OpenVinoBackend(final, inputs) as backend:
                result = score(backend, evaluation, reference, options.gate)
            judged["openvino-cpu"] = result.summary()
            miss = None if result.passed else result.describe()
        except Exception as e:  # OpenVINO cannot read or run this graph: not verified there, the bundle stands
            miss = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            judged["openvino-cpu"] = {"passed": False, "error": miss}
        seconds["openvino"] = time.perf_counter() - started
        if miss is not None:
            log.warning("the INT8 graph passes its gate on ONNX Runtime but not on OpenVINO (%s): recorded as "
                        "verified on ONNX Runtime only", miss)  # fmt: skip
    return final, {
        "mode": int8.mode,
        "method": int8.method if int8.mode == "static" else None,
        "per_channel": int8.per_channel,
        "symmetric": int8.symmetric,
        "op_types": list(OP_TYPES[int8.mode]),
        "calibration": None
        if calibration is None
        else {"folder": str(calibration.folder), "clips": len(calibration), "seed": calibration.seed},
        "evaluation": {
            "folder": str(evaluation.folder),
            "clips": len(evaluation),
            "seed": evaluation.seed,
            "disjoint_from_calibration": True,
            "excluded_calibration_clips": evaluation.excluded,
            "reference_answers": reference.answers(),  # PyTorch's top-1 per label: one label everywhere shows little
        },
        "gate": asdict(options.gate),
        # each CPU engine the gate judged the final graph on, and those it passed (ser.runtime.recognizer)
        "gate_verdicts": judged,
        "gate_backends": [name for name, verdict in judged.items() if verdict["passed"]],
        "target": "tensorrt" if int8.symmetric else int8.target,
        "reduce_range": int8.reduce_range,
        # the CPU the gate ran on, as far as INT8 numerics go, and the kernels' version (ser.runtime.cpu)
        "cpu": cpu_features().to_dict(),
        "onnxruntime": onnxruntime.__version__,
        "quantized_nodes": len(quantizable) - len(fallback.fp32_nodes),
        "fp32_nodes": list(fallback.fp32_nodes),
        **fallback.result.to_dict(),
        # what the gate cost: every candidate scored (nodes kept FP32, clips agreeing of those scored)
        "search": [{"fp32_nodes": count, **result.summary()} for count, result in fallback.tried],
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "size_bytes": _graph_bytes(final),
        "fp32_size_bytes": _graph_bytes(float_path),
    }
