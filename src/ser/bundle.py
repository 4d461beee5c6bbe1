"""The bundle folder: the contract between export and runtime.

A bundle is `model.onnx` (plus its external-data file for very large models) and `manifest.json`,
which says what the graph is and lists every file with its sha256. `Bundle.load` verifies those
hashes, so a half-copied or tampered bundle is refused before anything runs it. Writing goes
through `BundleWriter`, which stages the folder beside its destination and renames it into place,
so an interrupted export never leaves a half bundle. json and hashlib only: no torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ser.answer import CATEGORIES, KINDS, AnswerSpec
from ser.labels import LABELS, canonical_labels, label_problem
from ser.staging import StagedFolder

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
ORT_TENSORRT_CACHE = "ort-tensorrt-cache"  # where ONNX Runtime's TensorRT provider keeps its engines
TUNING_DIR = "tuning"  # `ser tune`'s measurement per kind of CPU, which `auto` follows (ser.runtime.tuning)
CACHE_DIRS = (ORT_TENSORRT_CACHE, TUNING_DIR)  # folders the runtime itself writes into a bundle; not checked
LOGITS, EMBEDDING = "logits", "embedding"  # the graph's outputs: the answer, and the optional pooled embedding


class BundleError(ValueError):
    """A bundle folder that cannot be used: the message names the folder and the reason."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output; `shape` holds ints for fixed dims and names for dynamic ones."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class ModelInfo:
    name: str  # registry name: wav2vec2, hubert, wavlm, resnet18
    size: str  # tiny, base, large, or "checkpoint" when the checkpoint's own config decides
    architecture: str  # the PyTorch class exported
    parameters: int


@dataclass(frozen=True)
class Manifest:
    model: ModelInfo
    labels: tuple[str, ...]
    sample_rate: int
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: dict[str, Any]  # {"kind": "checkpoint"|"hub"|"random-init", ...}
    versions: dict[str, str]
    validation: dict[str, Any]
    # per label, the canonical one of the seven it names (None: no counterpart, e.g. "calm")
    canonical_labels: tuple[str | None, ...] = ()
    optimization: dict[str, Any] = field(default_factory=dict)  # fused operators, node counts
    quantization: dict[str, Any] = field(default_factory=dict)  # mode, calibration, gate, FP32 nodes, sizes
    engines: tuple[dict[str, Any], ...] = ()  # TensorRT plans: file, GPU and TensorRT they were built for, profiles
    files: dict[str, str] = field(default_factory=dict)  # file name → sha256, filled in by BundleWriter
    # what the logits are: {"kind": "categories"|"dimensions"}; `labels` names them in order (labels, or dimensions)
    answer: dict[str, Any] = field(default_factory=dict)
    # the most of a clip the graph hears, in seconds (Whisper: its 30 s window; the rest is cut, as the model's own
    # feature extractor cuts it); None: the whole clip
    max_input_s: float | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not self.canonical_labels:  # manifests from before canonical labels: derived from the labels
            object.__setattr__(self, "canonical_labels", canonical_labels(self.labels))
        if not self.answer:  # manifests from before dimensional answers: categories, named by the labels
            object.__setattr__(self, "answer", {"kind": CATEGORIES})

    @property
    def answer_spec(self) -> AnswerSpec:
        """How the runtime reads the logits (ser.answer)."""
        kind = self.answer["kind"]
        return AnswerSpec(kind, self.labels, self.canonical_labels if kind == CATEGORIES else ())

    @property
    def embedding_size(self) -> int | None:
        """The width of the optional pooled-embedding output (`ser-export --embedding`), or None."""
        spec = next((t for t in self.outputs if t.name == EMBEDDING), None)
        return spec.shape[1] if spec is not None and isinstance(spec.shape[1], int) else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Manifest:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"{where}: manifest format_version {version} is not supported (this ser reads {FORMAT_VERSION})"
            )
        try:
            labels = tuple(data["labels"])
            manifest = cls(
                model=ModelInfo(**data["model"]),
                labels=labels,
                canonical_labels=tuple(data.get("canonical_labels") or ()),
                sample_rate=int(data["sample_rate"]),
                precision=data["precision"],
                inputs=tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in data["inputs"]),
                outputs=tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in data["outputs"]),
                source=dict(data["source"]),
                versions=dict(data["versions"]),
                validation=dict(data["validation"]),
                optimization=dict(data.get("optimization", {})),
                quantization=dict(data.get("quantization", {})),
                engines=tuple(dict(engine) for engine in data.get("engines", ())),
                files=dict(data["files"]),
                answer=dict(data.get("answer") or {}),
                max_input_s=None if data.get("max_input_s") is None else float(data["max_input_s"]),
                format_version=version,
            )
        except KeyError as e:
            raise BundleError(f"{where}: manifest lacks the field {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{where}: manifest is malformed: {e}") from None
        manifest.check_labels(where)
        return manifest

    @property
    def num_logits(self) -> int | None:
        """The logits' label dimension as the manifest declares it (None if not a fixed int)."""
        shape = self.outputs[0].shape if self.outputs else ()
        return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None

    def check_labels(self, where: str) -> None:
        """Labels must name the logits one to one: non-empty, unique, as many as the graph's outputs."""
        if self.num_logits is None:
            raise BundleError(f"{where}: outputs must declare logits [batch, labels] with a fixed label count")
        problem = label_problem(self.labels, self.num_logits)
        if problem is not None:
            raise BundleError(f"{where}: labels: {problem}; re-export the bundle")
        if self.answer.get("kind") not in KINDS:
            raise BundleError(
                f'{where}: answer must be {{"kind": one of {", ".join(KINDS)}}}, got {self.answer}; '
                "re-export the bundle"
            )
        if self.outputs[0].name != LOGITS or any(t.name not in (LOGITS, EMBEDDING) for t in self.outputs):
            raise BundleError(f"{where}: outputs must be {LOGITS} and optionally {EMBEDDING}")
        if len(self.canonical_labels) != len(self.labels) or any(
            c is not None and c not in LABELS for c in self.canonical_labels
        ):
            raise BundleError(f"{where}: canonical_labels must give one of {', '.join(LABELS)} or null per label")


def graph_signature(
    num_labels: int, embedding_size: int | None = None
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph contract every bundle follows: (inputs, outputs); the pooled embedding only when asked for."""
    inputs = (
        TensorSpec("audio", "float32", ("batch", "samples")),
        TensorSpec("lengths", "int64", ("batch",)),
    )
    outputs = (TensorSpec(LOGITS, "float32", ("batch", num_labels)),)
    if embedding_size is not None:
        outputs += (TensorSpec(EMBEDDING, "float32", ("batch", embedding_size)),)
    return inputs, outputs


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_NAME

    @property
    def id(self) -> str:
        """What the bundle is, in 16 hex digits: the start of its manifest's sha256. The manifest holds every
        file's sha256, so two bundles share an id only if they are the same files; batch output records it."""
        return sha256_file(self.path / MANIFEST_NAME)[:16]

    @classmethod
    def load(cls, path: str | Path) -> Bundle:
        """Read the manifest and verify every listed file's sha256; raise BundleError otherwise."""
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        if not path.is_dir():
            raise BundleError(f"{path}: not a bundle folder (no such directory)")
        if not manifest_path.is_file():
            raise BundleError(f"{path}: not a bundle folder (no {MANIFEST_NAME}); make one with ser-export")
        try:
            data = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BundleError(f"{manifest_path}: not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise BundleError(f"{manifest_path}: expected a JSON object")
        manifest = Manifest.from_dict(data, str(manifest_path))
        if ONNX_NAME not in manifest.files:
            raise BundleError(f"{manifest_path}: lists no {ONNX_NAME}")
        root = path.resolve()
        for name in manifest.files:  # judged by name alone first: nothing outside the folder is ever touched
            if not _is_plain_name(name):
                raise BundleError(
                    f"{manifest_path}: files entry {name!r} is not a plain file name inside the bundle; refused"
                )
        for name, expected in manifest.files.items():
            file = path / name
            if file.is_symlink() and not file.resolve().is_relative_to(root):
                raise BundleError(f"{path}: {name} is a symbolic link that leaves the bundle folder; copy the file in")
            if not file.is_file():
                raise BundleError(f"{path}: {name} is listed in the manifest but missing; copy the whole folder")
            if sha256_file(file) != expected:
                raise BundleError(
                    f"{path}: {name} does not match its sha256 in the manifest (corrupted or modified); "
                    "re-export or re-copy the bundle"
                )
        unlisted = _unlisted_files(path, set(manifest.files))
        if unlisted:
            raise BundleError(
                f"{path}: {unlisted[0]} is not in the manifest: every file a graph may read must be listed and "
                "hashed; remove it or re-export the bundle"
            )
        return cls(path, manifest)


def _is_plain_name(name: object) -> bool:
    """A bundle file is named by a bare file name: no folders, no '..', nothing absolute."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and name != MANIFEST_NAME
    )


def _unlisted_files(path: Path, listed: set[str]) -> list[str]:
    """Files (and links) in the bundle that the manifest does not list, outside the runtime's own caches."""
    found = []
    for entry in sorted(path.rglob("*")):
        relative = entry.relative_to(path)
        if relative.parts[0] in CACHE_DIRS or (entry.is_dir() and not entry.is_symlink()):
            continue
        if str(relative) not in listed and str(relative) != MANIFEST_NAME:
            found.append(str(relative))
    return found


class BundleWriter(StagedFolder):
    """Stage a bundle's files in `self.dir`, then `commit(manifest)` hashes them and renames the folder
    into place; see StagedFolder."""

    def _exists_error(self) -> Exception:
        return BundleError(f"{self.out}: already exists; choose another --out or pass --overwrite")

    def commit(self, manifest: Manifest) -> Bundle:  # type: ignore[override]
        """Hash every staged file into the manifest, write it, and move the folder to `out`."""
        assert self.dir is not None, "BundleWriter.commit outside its with-block"
        files = {p.name: sha256_file(p) for p in sorted(self.dir.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}
        manifest = replace(manifest, files=files)
        (self.dir / MANIFEST_NAME).write_text(manifest.to_json())
        return Bundle(super().commit(), manifest)
