"""The report's plots: latency against batch size and against clip length, and accuracy against speed-up
(the Pareto front of what each backend and precision buys), one panel per model."""

from __future__ import annotations

import math
from pathlib import Path

from ser.bench.measure import pareto_front
from ser.bench.results import ConfigResult, Results


def _label(config: ConfigResult) -> str:
    return f"{config.backend} {config.precision} t{config.threads}"


def _typical_seconds(results: Results) -> float:
    """The clip length plotted where one is fixed: the one closest to 4 s."""
    return min(results.suite["durations"], key=lambda s: abs(s - 4.0))


def _by_model(results: Results) -> dict[str, list[ConfigResult]]:
    models: dict[str, list[ConfigResult]] = {}
    for config in results.configs:
        if config.cases:
            models.setdefault(config.model_key, []).append(config)
    return models


def _panels(count: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(count, 2)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.2 * rows), squeeze=False)
    for extra in axes.flat[count:]:
        extra.set_visible(False)
    return plt, figure, list(axes.flat)


def _line_plot(results: Results, out: Path, axis: str) -> Path:
    models = _by_model(results)
    fixed_batch = min(results.suite["batch_sizes"])
    fixed_seconds = _typical_seconds(results)
    plt, figure, axes = _panels(len(models))
    for ax, (model, records) in zip(axes, models.items(), strict=False):
        for record in records:
            points = sorted(
                (c.batch if axis == "batch" else c.seconds, c.p50_ms)
                for c in record.cases
                if (axis == "batch" and c.seconds == fixed_seconds) or (axis == "seconds" and c.batch == fixed_batch)
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=_label(record))
        ax.set_title(model)
        ax.set_xlabel("batch size" if axis == "batch" else "clip length (s)")
        ax.set_xticks(results.suite["batch_sizes"] if axis == "batch" else results.suite["durations"])
        ax.set_ylabel("latency p50 (ms)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fixed = f"{fixed_seconds:g} s clips" if axis == "batch" else f"batch {fixed_batch}"
    figure.suptitle(
        f"{results.suite['name']}: latency against {'batch size' if axis == 'batch' else 'clip length'} ({fixed})"
    )
    figure.tight_layout()
    path = out / f"latency_vs_{'batch' if axis == 'batch' else 'duration'}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _pareto_plot(results: Results, out: Path) -> Path:
    models = _by_model(results)
    fixed_batch, fixed_seconds = min(results.suite["batch_sizes"]), _typical_seconds(results)
    plt, figure, axes = _panels(len(models))
    for ax, (model, records) in zip(axes, models.items(), strict=False):
        # Trained weights: accuracy against the labels. Random weights answer nothing meaningful, so what a
        # faster backend may cost is its top-1 agreement with PyTorch FP32 on the same clips.
        trained = records[0].checkpoint is not None and results.labelled
        points, names = [], []
        for record in records:
            case = record.case(fixed_batch, fixed_seconds)
            if trained:
                score = record.accuracy.accuracy if record.accuracy else None
            else:
                score = record.agreement.top1_agreement if record.agreement else None
            if case and case.speedup and score is not None:
                points.append((case.speedup, score))
                names.append(f"{record.backend} {record.precision}")
        if not points:
            continue
        for (x, y), name in zip(points, names, strict=True):
            ax.scatter(x, y)
            ax.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="grey", label="Pareto front")
        ax.set_title(model)
        ax.set_xlabel(f"speed-up over PyTorch eager FP32 (batch {fixed_batch}, {fixed_seconds:g} s)")
        ax.set_ylabel(
            "accuracy against the labels" if trained else "top-1 agreement with PyTorch FP32 (random weights)"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.suptitle(f"{results.suite['name']}: accuracy (or agreement) against speed-up")
    figure.tight_layout()
    path = out / "pareto.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_plots(results: Results, out: Path) -> list[Path]:
    """The plots the matrix has data for (latency against batch needs two batch sizes, and so on)."""
    if not _by_model(results):
        return []
    plots = []
    if len(results.suite["batch_sizes"]) > 1:
        plots.append(_line_plot(results, out, "batch"))
    if len(results.suite["durations"]) > 1:
        plots.append(_line_plot(results, out, "seconds"))
    if any(config.agreement is not None for config in results.configs):
        plots.append(_pareto_plot(results, out))
    return plots
