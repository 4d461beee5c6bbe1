"""A Triton Inference Server model repository from a bundle, for serving beyond one machine.

Two flavours. `python` (the default on CPUs): Triton's Python backend runs ser's own runtime on the
bundle (ser.export.triton_python_model), takes encoded audio files or samples and answers labels and
scores (ser.runtime.oip's tensors, the same as ser-serve's /v2 endpoints); its dynamic batcher groups
clips of any length. `onnxruntime`: Triton's ONNX Runtime backend runs the graph itself (CPU, or GPU
with `gpu` and its TensorRT accelerator with `tensorrt`); it takes `audio` and `lengths` and answers
`logits`, and batches only requests whose audio has the same length, so clients send fixed-length
windows (as `/v1/timeline` cuts them).

The config is built as Triton's own ModelConfig protobuf (from tritonclient), so field names and types
are Triton's, then held to the rules Triton documents for loading it (ser's checks, not the server's;
the python flavour is also loaded by a real server in the tests): for `onnxruntime`, every graph input
and output declared with its data type and rank (batch dimension implicit); for `python`, the model
file and a bundle that loads; version folder present, dynamic batching within max_batch_size.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ser.bundle import MANIFEST_NAME, Bundle, BundleError
from ser.staging import StagedFolder

ONNX_TYPES = {1: "TYPE_FP32", 7: "TYPE_INT64", 10: "TYPE_FP16"}  # onnx.TensorProto element types
LABELS_FILE = "labels.txt"
_TRITON_TYPES = {"BYTES": "TYPE_STRING", "FP32": "TYPE_FP32"}  # Open Inference Protocol datatype → ModelConfig
BACKENDS = ("python", "onnxruntime")
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


class TritonConfigError(ValueError):
    """A model repository entry Triton would refuse to load; the message names the field."""


@dataclass(frozen=True)
class TritonOptions:
    name: str | None = None  # the model's name in the repository; default: the bundle's model name
    backend: str = "onnxruntime"  # or "python": ser's runtime inside Triton's Python backend
    max_batch: int = 16
    max_queue_delay_us: int = 5000
    instances: int = 1
    gpu: bool = False  # KIND_GPU instances (ONNX Runtime's CUDA provider) instead of KIND_CPU
    tensorrt: bool = False  # on GPU, let ONNX Runtime hand the graph to TensorRT (FP16)
    threads: int | None = None  # python: ONNX Runtime's CPU threads per instance
    max_seconds: float = 60.0  # python: the longest clip a request may carry

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise TritonConfigError(f"unknown Triton backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.backend == "python" and self.gpu:
            raise TritonConfigError("the python flavour runs ser's CPU runtime; for GPUs use the onnxruntime backend")
        if self.max_batch < 1:
            raise TritonConfigError(f"max_batch must be at least 1, got {self.max_batch}")
        if self.tensorrt and not self.gpu:
            raise TritonConfigError("the TensorRT accelerator runs on GPU instances: add --triton-gpu")


def triton_config(bundle: Bundle, options: TritonOptions):
    """The ModelConfig protobuf for `bundle`."""
    from tritonclient.grpc import model_config_pb2 as mc

    num_labels = len(bundle.manifest.labels)
    config = mc.ModelConfig(
        name=options.name or bundle.manifest.model.name,
        backend=options.backend,
        max_batch_size=options.max_batch,
    )
    if options.backend == "python":
        _python_signature(config, bundle.manifest, options)
    else:
        config.input.append(mc.ModelInput(name="audio", data_type=mc.TYPE_FP32, dims=[-1]))
        # lengths is [batch] in the graph; Triton needs one non-batch dim, so [1] reshaped to a scalar.
        config.input.append(
            mc.ModelInput(name="lengths", data_type=mc.TYPE_INT64, dims=[1], reshape=mc.ModelTensorReshape(shape=[]))
        )
        config.output.append(
            mc.ModelOutput(name="logits", data_type=mc.TYPE_FP32, dims=[num_labels], label_filename=LABELS_FILE)
        )
        if bundle.manifest.embedding_size is not None:
            config.output.append(
                mc.ModelOutput(name="embedding", data_type=mc.TYPE_FP32, dims=[bundle.manifest.embedding_size])
            )
    preferred = [b for b in (4, 8, 16, 32, 64) if b < options.max_batch] + [options.max_batch]
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    kind = mc.ModelInstanceGroup.KIND_GPU if options.gpu else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.append(mc.ModelInstanceGroup(count=options.instances, kind=kind))
    if options.tensorrt:
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accelerator.name = "tensorrt"
        accelerator.parameters["precision_mode"] = "FP16"
        accelerator.parameters["max_workspace_size_bytes"] = str(4 << 30)
    return config


def _python_signature(config, manifest, options: TritonOptions) -> None:
    """ser.runtime.oip's tensors for what the bundle answers; AUDIO is ragged, so requests of any length batch
    together. The names of the labels or dimensions are in labels.txt, tied to SCORES or DIMENSIONS."""
    from tritonclient.grpc import model_config_pb2 as mc

    from ser.runtime import oip

    config.input.append(mc.ModelInput(name=oip.AUDIO_FILE, data_type=mc.TYPE_STRING, dims=[1], optional=True))
    config.input.append(
        mc.ModelInput(name=oip.AUDIO, data_type=mc.TYPE_FP32, dims=[-1], optional=True, allow_ragged_batch=True)
    )
    config.input.append(mc.ModelInput(name=oip.LENGTHS, data_type=mc.TYPE_INT64, dims=[1], optional=True))
    for output in oip.outputs_metadata(manifest.answer_spec, manifest.embedding_size):
        named = output["name"] in (oip.SCORES, oip.DIMENSIONS)
        config.output.append(
            mc.ModelOutput(
                name=output["name"],
                data_type=mc.DataType.Value(_TRITON_TYPES[output["datatype"]]),
                dims=output["shape"][1:],
                label_filename=LABELS_FILE if named else "",
            )
        )
    config.parameters["max_seconds"].string_value = f"{options.max_seconds:g}"
    if options.threads is not None:
        config.parameters["threads"].string_value = str(options.threads)


def write_triton_repository(
    bundle: Bundle, repository: str | Path, options: TritonOptions = TritonOptions(), overwrite: bool = False
) -> Path:
    """Write repository/<name>/{config.pbtxt, labels.txt, 1/...} and check it; returns the model folder. In 1/:
    model.onnx (onnxruntime), or model.py and the bundle in bundle/ (python).

    Other models in the repository are left alone; this one's folder appears whole or not at all.
    """
    from google.protobuf import text_format

    config = triton_config(bundle, options)
    manifest = bundle.manifest
    header = (
        f"# Written by ser-export from {bundle.path} ({manifest.model.name}, {manifest.model.size}, "
        f"{manifest.precision}).\n"
        + (
            "# ser's runtime in Triton's Python backend: clips of any length batch together.\n"
            if options.backend == "python"
            else "# Requests batch together when their audio has the same length: send fixed-length windows.\n"
        )
    )
    with StagedFolder(Path(repository) / config.name, overwrite) as staged:
        assert staged.dir is not None
        (staged.dir / "config.pbtxt").write_text(header + text_format.MessageToString(config))
        (staged.dir / LABELS_FILE).write_text("\n".join(manifest.labels) + "\n")
        version = staged.dir / "1"
        version.mkdir()
        if options.backend == "python":
            shutil.copy2(PYTHON_MODEL, version / "model.py")
            (version / "bundle").mkdir()
            for name in (*manifest.files, MANIFEST_NAME):
                shutil.copy2(bundle.path / name, version / "bundle" / name)
        else:
            for name in manifest.files:
                if name.startswith("model.onnx"):  # the graph and its external weights, if any
                    shutil.copy2(bundle.path / name, version / name)
        check_triton_model(staged.dir, expected_name=config.name)
        return staged.commit()


def check_triton_model(model_dir: str | Path, expected_name: str | None = None):
    """Parse model_dir/config.pbtxt as Triton's ModelConfig and hold it to the ONNX graph in 1/."""
    import onnx
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    model_dir = Path(model_dir)
    where = model_dir / "config.pbtxt"
    try:
        config = text_format.Parse(where.read_text(), mc.ModelConfig())
    except (OSError, text_format.ParseError) as e:
        raise TritonConfigError(f"{where}: {e}") from None
    if config.name != (expected_name or model_dir.name):
        raise TritonConfigError(f"{where}: name {config.name!r} must match the folder {model_dir.name!r}")
    if config.backend == "python":
        return _check_python_model(model_dir, config)
    graph_file = model_dir / "1" / "model.onnx"
    if not graph_file.is_file():
        raise TritonConfigError(f"{model_dir}: no version folder with model.onnx (expected {graph_file})")
    if config.max_batch_size < 1:
        raise TritonConfigError(f"{where}: max_batch_size must be positive: the graph has a batch dimension")
    if any(b > config.max_batch_size for b in config.dynamic_batching.preferred_batch_size):
        raise TritonConfigError(f"{where}: a preferred_batch_size exceeds max_batch_size {config.max_batch_size}")

    graph = onnx.load(str(graph_file), load_external_data=False).graph
    declared = {t.name: t for t in [*config.input, *config.output]}
    for tensor in [*graph.input, *graph.output]:
        entry = declared.pop(tensor.name, None)
        if entry is None:
            raise TritonConfigError(f"{where}: graph tensor {tensor.name!r} is not declared")
        onnx_type = ONNX_TYPES.get(tensor.type.tensor_type.elem_type, "unsupported")
        config_type = mc.DataType.Name(entry.data_type)
        if onnx_type != config_type:
            raise TritonConfigError(f"{where}: {tensor.name} is {onnx_type} in the graph, {config_type} in the config")
        rank = len(tensor.type.tensor_type.shape.dim)
        shape = entry.reshape.shape if entry.HasField("reshape") else entry.dims
        if len(shape) + 1 != rank:
            raise TritonConfigError(
                f"{where}: {tensor.name} has rank {rank} in the graph; the config gives {len(shape)} dims + batch"
            )
    if declared:
        raise TritonConfigError(f"{where}: {', '.join(declared)} declared but not in the graph")
    for output in config.output:
        if output.label_filename:
            labels = (model_dir / output.label_filename).read_text().splitlines()
            if [len(labels)] != list(output.dims):
                raise TritonConfigError(f"{where}: {output.label_filename} has {len(labels)} labels for {output.dims}")
    return config


def _check_python_model(model_dir: Path, config):
    """The python flavour as the server would meet it: its model file, a bundle that loads, the tensors
    ser.runtime.oip names, labels that match the scores."""
    from tritonclient.grpc import model_config_pb2 as mc

    from ser.runtime import oip

    where = model_dir / "config.pbtxt"
    version = model_dir / "1"
    if not (version / "model.py").is_file():
        raise TritonConfigError(f"{model_dir}: no version folder with model.py (expected {version / 'model.py'})")
    try:
        bundle = Bundle.load(version / "bundle")
    except BundleError as e:
        raise TritonConfigError(f"{model_dir}: the bundle in 1/bundle does not load: {e}") from None
    if config.max_batch_size < 1:
        raise TritonConfigError(f"{where}: max_batch_size must be positive: requests carry a batch dimension")
    inputs = {i.name: mc.DataType.Name(i.data_type) for i in config.input}
    outputs = {o.name: o for o in config.output}
    expected_in = {oip.AUDIO_FILE: "TYPE_STRING", oip.AUDIO: "TYPE_FP32", oip.LENGTHS: "TYPE_INT64"}
    if inputs != expected_in:
        raise TritonConfigError(f"{where}: inputs {inputs} are not ser's {expected_in}")
    manifest = bundle.manifest
    expected_out = {o["name"]: o for o in oip.outputs_metadata(manifest.answer_spec, manifest.embedding_size)}
    if set(outputs) != set(expected_out):
        raise TritonConfigError(f"{where}: outputs {sorted(outputs)} are not this bundle's {sorted(expected_out)}")
    for name, expected in expected_out.items():
        if list(outputs[name].dims) != expected["shape"][1:]:
            got, want = list(outputs[name].dims), expected["shape"][1:]
            raise TritonConfigError(f"{where}: {name} dims {got}, expected {want}")
    named = outputs.get(oip.SCORES) or outputs[oip.DIMENSIONS]
    labels = (model_dir / named.label_filename).read_text().splitlines()
    if tuple(labels) != manifest.labels:
        raise TritonConfigError(f"{where}: {named.label_filename} does not list the bundle's {manifest.answer['kind']}")
    return config
