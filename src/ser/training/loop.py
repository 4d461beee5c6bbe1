"""Fine-tuning: from a pretrained checkpoint or from scratch, to the checkpoint folder export reads.

The model trains behind the same WaveformClassifier that is exported, so the masking and the
in-graph normalisation it learns with are the ones it is deployed with. A run folder holds:
checkpoint/ (the best epoch, by validation macro-F1: config.json, model.safetensors and
preprocessor_config.json, a link to checkpoint-epoch-NNNN/ replaced in one rename; `ser-export
--checkpoint RUN` loads it), split.json, options.json, start.json (the checkpoint it
started from, the class it loaded as, and which weights were initialised for a new head), history.json,
state.pt (the last finished epoch, for --resume), and metrics.json + confusion.png for the test split
(the validation split when it has no test clips).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ser.audio import SAMPLE_RATE, AudioError, load_audio
from ser.data.corpus import Clip, Corpus, RatedClip, Split, corpus_fingerprint, drop_unreadable, split_corpus
from ser.labels import LABELS
from ser.metrics import (
    ClassificationMetrics,
    RegressionMetrics,
    classification_metrics,
    plot_confusion,
    regression_metrics,
)
from ser.models.checkpoint import RUN_CHECKPOINT, LoadedModel, load_model
from ser.models.registry import get_spec
from ser.models.waveform import WaveformClassifier
from ser.runtime.recognizer import pad_batch
from ser.staging import write_atomic
from ser.training.augment import AugmentOptions, build_augment

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
START_FILE = "start.json"
MAX_EVAL_SECONDS = 30.0  # longer clips are cut for evaluation, to bound memory


class TrainError(ValueError):
    """Options or a run folder that training cannot start from; the message says what to change."""


@dataclass(frozen=True)
class TrainOptions:
    model: str
    data: Path
    out: Path
    checkpoint: str | None = None  # pretrained start (folder or hub id); None trains from scratch at `size`
    size: str | None = None  # from scratch only; None: the model's default size
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float | None = None  # None: 5e-5 from a checkpoint, 1e-3 from scratch
    weight_decay: float = 0.01
    warmup: float = 0.1  # share of all steps with a linear LR ramp; cosine decay after it
    dropout: float | None = None  # None keeps the config's rates
    freeze_encoder: bool = False  # keep the pretrained convolutional feature encoder fixed
    class_weights: bool = True  # weight the loss by inverse class frequency
    patience: int = 5  # epochs without a better validation macro-F1 before stopping
    grad_clip: float = 1.0
    max_seconds: float = 6.0  # training clips are cut to a random window this long
    augment: AugmentOptions | None = field(default_factory=AugmentOptions)
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    device: str = "auto"
    mixed_precision: bool = True  # on CUDA only: bf16 where supported, else fp16 with loss scaling
    workers: int | None = None  # data-loading processes; None: one less than the cores, at most 4

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 5e-5 if self.checkpoint else 1e-3

    def to_json(self) -> str:
        data = asdict(self)
        data |= {"data": str(self.data), "out": str(self.out)}
        return json.dumps(data, indent=2)


@dataclass(frozen=True)
class TrainResult:
    out: Path
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    validation: ClassificationMetrics
    test: ClassificationMetrics | None  # None when the split has no test clips: nothing was held out for it

    @property
    def held_out(self) -> tuple[str, ClassificationMetrics]:
        """The final scores and which split they are: the test split's, else the validation split's."""
        return ("test", self.test) if self.test is not None else ("validation", self.validation)


class ClipDataset(Dataset):
    """Decoded clips as (float32 samples, label index); random windows and augmentation when training."""

    def __init__(
        self,
        clips: Sequence[Clip],
        labels: Sequence[str],
        max_samples: int,
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
        random_crop: bool = False,
    ):
        self.clips, self.index = list(clips), {label: i for i, label in enumerate(labels)}
        self.max_samples, self.augment, self.random_crop = max_samples, augment, random_crop

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        clip = self.clips[i]
        audio = load_audio(clip.path)
        if len(audio) > self.max_samples:
            start = np.random.randint(0, len(audio) - self.max_samples + 1) if self.random_crop else 0
            audio = audio[start : start + self.max_samples]
        if self.augment is not None:
            audio = self.augment(audio)
        return audio, self.index[clip.label]


def collate(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to the longest clip: (audio [batch, samples], lengths [batch], labels [batch])."""
    lengths = torch.tensor([len(a) for a, _ in batch], dtype=torch.int64)
    audio = torch.zeros(len(batch), int(lengths.max()))
    for row, (samples, _) in enumerate(batch):
        audio[row, : len(samples)] = torch.from_numpy(samples)
    return audio, lengths, torch.tensor([label for _, label in batch], dtype=torch.int64)


def _seed_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)  # audiomentations draws from numpy's global RNG


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device {device!r}: CUDA is not available here; use --device cpu")
    return torch.device(device)


@torch.no_grad()
def predict(
    classifier: WaveformClassifier, clips: Sequence[Clip], labels: Sequence[str], device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """(true indices, predicted indices, mean loss) over `clips`, in eval mode."""
    classifier.eval()
    dataset = ClipDataset(clips, labels, int(MAX_EVAL_SECONDS * SAMPLE_RATE))
    y_true, y_pred, losses = [], [], []
    for audio, lengths, targets in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        logits = classifier(audio.to(device), lengths.to(device)).float()
        losses.append(torch.nn.functional.cross_entropy(logits, targets.to(device), reduction="sum").item())
        y_true.append(targets.numpy())
        y_pred.append(logits.argmax(dim=1).cpu().numpy())
    return np.concatenate(y_true), np.concatenate(y_pred), sum(losses) / len(dataset)


def evaluate(
    loaded: LoadedModel, clips: Sequence[Clip], device: torch.device | str = "cpu", batch_size: int = 8
) -> ClassificationMetrics:
    """Scores of a loaded model on labelled clips (labels matched to the model's label map by name)."""
    labels = loaded.labels
    unknown = sorted({c.label for c in clips} - set(labels))
    if unknown:
        raise TrainError(f"the model has no output for {', '.join(unknown)}; its labels are {', '.join(labels)}")
    device = torch.device(device)
    classifier = loaded.waveform().to(device)
    y_true, y_pred, _ = predict(classifier, clips, labels, device, batch_size)
    return classification_metrics(y_true, y_pred, labels)


def evaluate_dimensions(
    loaded: LoadedModel, clips: Sequence[RatedClip], device: torch.device | str = "cpu", batch_size: int = 8
) -> tuple[RegressionMetrics, list[str]]:
    """CCC, Pearson and MAE per dimension of a dimensional model on rated clips, and the clips skipped because
    they do not decode (each "path: why"). Clips are cut to MAX_EVAL_SECONDS like the classification scores."""
    device = torch.device(device)
    classifier = loaded.waveform().to(device).eval()
    truth, predicted, skipped = [], [], []
    limit = int(MAX_EVAL_SECONDS * SAMPLE_RATE)
    with torch.inference_mode():
        for start in range(0, len(clips), batch_size):  # a batch decoded at a time: memory stays bounded
            chunk = []
            for clip in clips[start : start + batch_size]:
                try:
                    chunk.append((load_audio(clip.path)[:limit], clip.values))
                except AudioError as e:
                    skipped.append(f"{clip.path}: {e}")
            if not chunk:
                continue
            audio, lengths = pad_batch([samples for samples, _ in chunk])
            values = classifier(torch.from_numpy(audio).to(device), torch.from_numpy(lengths).to(device))
            predicted.append(values.float().cpu().numpy())
            truth += [list(v) for _, v in chunk]
    if not predicted:
        raise TrainError("no rated clip decodes: " + "; ".join(skipped[:3]))
    return regression_metrics(np.array(truth), np.concatenate(predicted), loaded.labels), skipped


def write_metrics(metrics: ClassificationMetrics, out: Path, title: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "metrics.json", metrics.to_json())
    plot_confusion(metrics, out / "confusion.png", title)


def train(
    options: TrainOptions, show_progress: bool = True, resume: bool = False, overwrite: bool = False
) -> TrainResult:
    """Fine-tune `options.model` on `options.data` into `options.out`; see the module docstring."""
    return _Run(options, show_progress, resume, overwrite).run()


@dataclass(frozen=True)
class _Step:
    """What one optimisation step needs, made once per run."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    loss_weights: torch.Tensor | None


class _Run:
    def __init__(self, options: TrainOptions, show_progress: bool, resume: bool, overwrite: bool):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bar is the one to watch
        self.o, self.out, self.show_progress = options, Path(options.out), show_progress
        spec = get_spec(options.model)
        if options.checkpoint and options.size:
            raise TrainError("--size applies when training from scratch; a checkpoint fixes the size")
        self.device = resolve_device(options.device)
        torch.manual_seed(options.seed)
        np.random.seed(options.seed)

        # Everything that can fail on the options fails before the run folder is touched.
        overrides = {key: options.dropout for key in spec.dropout_keys} if options.dropout is not None else {}
        if options.checkpoint:
            self.loaded = load_model(spec.name, options.checkpoint, labels=LABELS, overrides=overrides)
            if self.loaded.source.get("initialized"):
                log.info(
                    "%s: a new %d-label head; initialised %s",
                    options.checkpoint,
                    len(LABELS),
                    ", ".join(self.loaded.source["initialized"]),
                )
        else:
            overrides |= spec.from_scratch
            self.loaded = load_model(
                spec.name, size=options.size, random_init=True, seed=options.seed, labels=LABELS, overrides=overrides
            )
        if options.freeze_encoder:
            if not hasattr(self.loaded.model, "freeze_feature_encoder"):
                raise TrainError(f"{spec.name} has no pretrained feature encoder to freeze")
            self.loaded.model.freeze_feature_encoder()
        self.classifier = self.loaded.waveform().to(self.device)
        corpus = Corpus.from_path(options.data)
        self._check_out(resume, overwrite)
        self.split = self._split(corpus, resume)

    def _check_out(self, resume: bool, overwrite: bool) -> None:
        state = self.out / STATE_FILE
        if resume:
            if not state.is_file():
                raise TrainError(f"{self.out}: nothing to resume (no {STATE_FILE}); start without --resume")
            saved = json.loads((self.out / "options.json").read_text())
            for key in ("model", "checkpoint", "size", "seed", "val_fraction", "test_fraction"):
                if saved.get(key) != getattr(self.o, key):
                    raise TrainError(
                        f"{self.out}: was started with {key}={saved.get(key)!r}, not {getattr(self.o, key)!r}; "
                        "resume with the same options, or train into a new --out"
                    )
            if saved.get("epochs") != self.o.epochs:
                # The learning-rate schedule (warm-up, cosine decay to 0) was laid out over the planned epochs:
                # resuming under another count would jump along it, and past its end train at rate 0.
                raise TrainError(
                    f"{self.out}: was planned for {saved.get('epochs')} epochs, and its learning-rate schedule with "
                    f"it; resume with --epochs {saved.get('epochs')}, or to train longer start a new run from this "
                    f"one: --checkpoint {self.out} --out NEW"
                )
        elif self.out.exists() and any(self.out.iterdir()):
            if not overwrite:
                raise TrainError(f"{self.out}: already holds a run; pass --resume to continue it or --overwrite")
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def _split(self, corpus: Corpus, resume: bool) -> Split:
        fingerprint = corpus_fingerprint(corpus)
        if resume:
            split = Split.load(self.out / "split.json", corpus.root)
            if split.fingerprint is not None and split.fingerprint != fingerprint:
                raise TrainError(
                    f"{self.out}: was started on other data than {self.o.data} ({len(corpus.clips)} clips; the "
                    "files, labels or sizes differ); resume with the data it started on, or train into a new --out"
                )
            return split
        log.info("checking %d clips in %s", len(corpus.clips), self.o.data)
        corpus = drop_unreadable(corpus)
        split = split_corpus(corpus, self.o.seed, self.o.val_fraction, self.o.test_fraction)
        split = dataclasses.replace(split, fingerprint=fingerprint)
        if not split.train or not split.val:
            raise TrainError(f"{self.o.data}: too few clips to split into train, validation and test")
        split.save(self.out / "split.json", corpus.root)
        write_atomic(self.out / "options.json", self.o.to_json())
        # Where the run started: the checkpoint, the class it was loaded as, the weights initialised for a new head.
        write_atomic(self.out / START_FILE, json.dumps(self.loaded.source, indent=2) + "\n")
        return split

    def _loader(self, clips: Sequence[Clip], train: bool) -> DataLoader:
        o = self.o
        augment = build_augment(o.augment) if (train and o.augment) else None
        max_samples = int((o.max_seconds if train else MAX_EVAL_SECONDS) * SAMPLE_RATE)
        dataset = ClipDataset(clips, LABELS, max_samples, augment, random_crop=train)
        workers = o.workers if o.workers is not None else min(4, max((os.cpu_count() or 1) - 1, 0))
        return DataLoader(
            dataset,
            batch_size=o.batch_size,
            shuffle=train,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(o.seed),
        )

    def _class_weights(self) -> torch.Tensor | None:
        if not self.o.class_weights:
            return None
        counts = np.array([sum(c.label == label for c in self.split.train) for label in LABELS], dtype=np.float64)
        weights = np.divide(counts.sum(), len(LABELS) * counts, out=np.zeros_like(counts), where=counts > 0)
        return torch.tensor(weights, dtype=torch.float32, device=self.device)

    def run(self) -> TrainResult:
        train_loader = self._loader(self.split.train, train=True)
        step = self._optimization(self.o.epochs * len(train_loader))
        state = self._resume(step)
        with _progress(self.show_progress) as progress:
            for epoch in range(state["epoch"] + 1, self.o.epochs + 1):
                if state["stopped"]:
                    break
                started = time.perf_counter()
                task = progress.add_task(
                    f"epoch {epoch}/{self.o.epochs}", total=len(train_loader), loss=float("nan"), accuracy=float("nan")
                )
                report = functools.partial(progress.update, task)
                train_loss, train_accuracy = self._train_epoch(train_loader, step, report)
                line = self._end_epoch(epoch, state, train_loss, train_accuracy, step, time.perf_counter() - started)
                progress.console.print(line)
                self._save_state(self.loaded.model, step.optimizer, step.scheduler, step.scaler, state)
        return self._finish(state)

    def _optimization(self, steps: int) -> _Step:
        """AdamW over the trainable weights, linear warm-up then cosine decay, and mixed precision on CUDA."""
        o, model = self.o, self.loaded.model
        warmup = max(1, int(o.warmup * steps))
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=o.lr, weight_decay=o.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: (
                (step + 1) / warmup
                if step < warmup
                else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
            ),
        )
        amp_dtype = None
        if self.device.type == "cuda" and o.mixed_precision:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        return _Step(optimizer, scheduler, scaler, amp_dtype, self._class_weights())

    def _resume(self, step: _Step) -> dict:
        """The progress so far: fresh, or (with state.pt) the last finished epoch's weights, optimizer and RNG."""
        state = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "stopped": False}
        if (self.out / STATE_FILE).is_file():
            saved = torch.load(self.out / STATE_FILE, map_location=self.device, weights_only=True)
            self.loaded.model.load_state_dict(saved["model"])
            step.optimizer.load_state_dict(saved["optimizer"])
            step.scheduler.load_state_dict(saved["scheduler"])
            step.scaler.load_state_dict(saved["scaler"])
            torch.set_rng_state(saved["torch_rng"])
            state = saved["progress"]
            log.info("resuming %s after epoch %d", self.out, state["epoch"])
        return state

    def _train_epoch(self, loader: DataLoader, step: _Step, report: Callable[..., None]) -> tuple[float, float]:
        """One pass over the training clips; returns the mean loss and the accuracy seen while training."""
        self.classifier.train()
        total_loss, correct, seen = 0.0, 0, 0
        for audio, lengths, targets in loader:
            audio, lengths, targets = (t.to(self.device, non_blocking=True) for t in (audio, lengths, targets))
            amp = step.amp_dtype
            with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=bool(amp)):
                logits = self.classifier(audio, lengths)
            loss = torch.nn.functional.cross_entropy(logits.float(), targets, weight=step.loss_weights)
            step.optimizer.zero_grad(set_to_none=True)
            step.scaler.scale(loss).backward()
            step.scaler.unscale_(step.optimizer)
            torch.nn.utils.clip_grad_norm_(self.loaded.model.parameters(), self.o.grad_clip)
            step.scaler.step(step.optimizer)
            step.scaler.update()
            step.scheduler.step()
            total_loss, seen = total_loss + loss.item() * len(targets), seen + len(targets)
            correct += int((logits.argmax(dim=1) == targets).sum())
            report(advance=1, loss=total_loss / seen, accuracy=correct / seen)
        return total_loss / seen, correct / seen

    def _end_epoch(
        self, epoch: int, state: dict, train_loss: float, train_accuracy: float, step: _Step, seconds: float
    ) -> str:
        """Validate, record the epoch, keep the best checkpoint, decide early stopping; returns the log line."""
        y_true, y_pred, val_loss = predict(self.classifier, self.split.val, LABELS, self.device, self.o.batch_size)
        val = classification_metrics(y_true, y_pred, LABELS)
        state["history"].append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "val_loss": val_loss,
                "val_accuracy": val.accuracy,
                "val_macro_f1": val.macro_f1,
                "lr": step.scheduler.get_last_lr()[0],
                "seconds": seconds,
            }
        )
        improved = val.macro_f1 > state["best_f1"]
        if improved:
            state |= {"best_f1": val.macro_f1, "best_epoch": epoch, "bad_epochs": 0}
            self._save_checkpoint(epoch)
        else:
            state["bad_epochs"] += 1
            state["stopped"] = state["bad_epochs"] >= self.o.patience
        state["epoch"] = epoch
        return (
            f"epoch {epoch}: loss {train_loss:.3f}  val loss {val_loss:.3f}  "
            f"val acc {val.accuracy:.3f}  val macro-F1 {val.macro_f1:.3f}{'  *best' if improved else ''}"
            f"{'  (early stop)' if state['stopped'] else ''}"
        )

    def _save_checkpoint(self, epoch: int) -> None:
        """The best epoch so far, as one checkpoint folder written in full, then put in place by replacing the
        `checkpoint` link in one rename: a kill at any moment leaves the previous best or the new one, whole."""
        folder = self.out / f"{RUN_CHECKPOINT}-epoch-{epoch:04d}"
        shutil.rmtree(folder, ignore_errors=True)
        self.loaded.model.save_pretrained(folder)
        self.loaded.feature_extractor().save_pretrained(folder)
        link, staged = self.out / RUN_CHECKPOINT, self.out / f".{RUN_CHECKPOINT}.link-tmp"
        staged.unlink(missing_ok=True)
        staged.symlink_to(folder.name)  # relative: the run folder can be moved or copied
        os.replace(staged, link)
        for old in self.out.glob(f"{RUN_CHECKPOINT}-epoch-*"):  # earlier bests, and any a kill left behind
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)

    def _save_state(self, model, optimizer, scheduler, scaler, progress_state: dict) -> None:
        tmp = self.out / f".{STATE_FILE}.tmp"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "progress": progress_state,
            },
            tmp,
        )
        os.replace(tmp, self.out / STATE_FILE)
        write_atomic(self.out / "history.json", json.dumps(progress_state["history"], indent=2))

    def _finish(self, state: dict) -> TrainResult:
        best = load_model(self.o.model, self.out)
        val = evaluate(best, self.split.val, self.device, self.o.batch_size)
        test = evaluate(best, self.split.test, self.device, self.o.batch_size) if self.split.test else None
        result = TrainResult(self.out, state["best_epoch"], state["epoch"], state["stopped"], val, test)
        split, metrics = result.held_out
        clips = len(self.split.test if test is not None else self.split.val)
        write_metrics(metrics, self.out, f"{self.o.model}: {split} split, best epoch {state['best_epoch']}")
        log.info("%s split (%d clips): %s", split, clips, metrics.summary())
        return result


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  train acc {task.fields[accuracy]:.3f}"),
        disable=not enabled,
        transient=True,
    )
