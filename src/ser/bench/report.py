"""Write a run's results folder: results.json (everything, raw samples included), results.csv (one row per
configuration and case), report.md (the tables, with the plots embedded), and the terminal table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from ser.bench.results import ConfigResult, Results
from ser.metrics import Agreement
from ser.staging import write_atomic

JSON_NAME, CSV_NAME, REPORT_NAME = "results.json", "results.csv", "report.md"
ROW_FIELDS = (
    "model", "backend", "precision", "threads", "device", "batch", "seconds", "runs", "p50_ms", "p90_ms",
    "p99_ms", "mean_ms", "std_ms", "clips_per_s", "audio_x", "speedup", "cold_start_s", "peak_rss_mib",
    "gpu_mib", "bytes", "accuracy", "macro_f1", "top1_agreement", "min_ccc", "max_abs_logit_error",
    "mean_abs_logit_error", "error",
)  # fmt: skip


def rows(results: Results) -> list[dict[str, Any]]:
    """One flat row per configuration and case (a failed configuration with no case: one row, its error)."""
    table = []
    for config in results.configs:
        agreement = config.agreement.to_dict() if config.agreement else {}
        common = {
            "model": config.model_key,
            "backend": config.backend,
            "precision": config.precision,
            "threads": config.threads,
            "device": config.device,
            "cold_start_s": config.cold.cold_start_s if config.cold else None,
            "peak_rss_mib": config.memory.peak_rss_mib if config.memory else None,
            "gpu_mib": config.memory.gpu_mib if config.memory else None,
            "bytes": config.bytes,
            "accuracy": config.accuracy.accuracy if config.accuracy else None,
            "macro_f1": config.accuracy.macro_f1 if config.accuracy else None,
            **{key: agreement.get(key) for key in ("top1_agreement", "max_abs_logit_error", "mean_abs_logit_error")},
            "min_ccc": config.agreement.min_ccc if config.agreement else None,  # dimensional models
            "error": config.error,
        }
        cases = [case.to_json() for case in config.cases] or [{}]
        for case in cases:
            table.append({field: {**common, **case}.get(field) for field in ROW_FIELDS})
    return table


def write_outputs(results: Results, out: Path) -> None:
    from ser.bench.plots import write_plots

    write_atomic(out / JSON_NAME, json.dumps(results.to_json(), indent=1))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ROW_FIELDS)
    writer.writeheader()
    writer.writerows(rows(results))
    write_atomic(out / CSV_NAME, buffer.getvalue())
    plots = write_plots(results, out)
    write_atomic(out / REPORT_NAME, markdown(results, plots))


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def machine_line(env: dict[str, Any]) -> str:
    cpu = env["cpu"]
    gpus = ", ".join(f"{g['name']} ({g.get('memory', '?')}, driver {g.get('driver', '?')})" for g in env["gpus"])
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    return (
        f"{cpu['model']}, {cpu['cores']} cores ({' '.join(cpu['flags']) or 'no AVX2'}), {env['memory_gib']} GiB; "
        f"{gpus or 'no GPU'}. {versions}."
    )


def clip_line(clips: tuple[dict[str, Any], ...]) -> str:
    if clips and all(c.get("ratings") for c in clips):
        return f"{len(clips)} rated clips for CCC per dimension and agreement"
    if clips and all(c["label"] is not None for c in clips):
        return f"{len(clips)} labelled clips for accuracy and agreement"
    return f"{len(clips)} synthetic clips for agreement (the suite has no labelled data)"


def markdown(results: Results, plots: list[Path]) -> str:
    suite, env, timing = results.suite, results.environment, results.suite["timing"]
    lines = [f"# Benchmark `{suite['name']}`", ""]
    if suite["description"]:
        lines += [suite["description"], ""]
    lines += [
        f"- **Machine**: {machine_line(env)}",
        f"- **Run**: {results.started}, {results.wall_s / 60:.1f} min; {clip_line(results.clips)}.",
        f"- **Method**: each configuration in its own process; {timing['warmup']} warm-up calls, then interleaved "
        f"rounds until {timing['min_runs']} runs and {timing['seconds']:g} s per case (at most {timing['max_runs']}). "
        "Speed-up and agreement are against PyTorch eager FP32 with the same threads, batch and clip length.",
        "",
        "## Latency and throughput",
        "",
        "*audio ×*: seconds of audio answered per second (inverse real-time factor).",
        "",
    ]
    table = rows(results)
    header = ["model", "backend", "precision", "threads", "batch", "clip s", "p50 ms", "p90 ms", "p99 ms",
              "mean ± sd ms", "clips/s", "audio ×", "speed-up"]  # fmt: skip
    body = [
        [r["model"], r["backend"], r["precision"], str(r["threads"]), str(r["batch"]), f"{r['seconds']:g}",
         _fmt(r["p50_ms"]), _fmt(r["p90_ms"]), _fmt(r["p99_ms"]), f"{r['mean_ms']:.1f} ± {r['std_ms']:.1f}",
         _fmt(r["clips_per_s"]), _fmt(r["audio_x"]), f"{r['speedup']:.2f}x" if r["speedup"] else "–"]
        for r in table
        if r["batch"] is not None
    ]  # fmt: skip
    lines += _table(header, body)
    lines += _against_peers(results)
    lines += ["", "## Accuracy, cold start, memory and size", ""]
    lines += [
        "Accuracy and macro-F1 against the labels; agreement and logit errors against PyTorch eager FP32 on the "
        "same clips (a dimensional model: the lowest CCC of its dimensions, and errors of its values). Cold start: "
        "loading plus the first answer. GPU memory includes the CUDA context.",
        "",
    ]
    header = ["model", "backend", "precision", "threads", "accuracy", "macro-F1", "agreement", "max Δlogit",
              "mean Δlogit", "cold start s", "peak RSS MiB", "GPU MiB", "size MB"]  # fmt: skip
    body = []
    for c in results.configs:
        acc, agree, memory, cold = c.accuracy, c.agreement, c.memory, c.cold
        body.append(
            [c.model_key, c.backend, c.precision, str(c.threads),
             _fmt(acc.accuracy if acc else None, 3), _fmt(acc.macro_f1 if acc else None, 3),
             _agreement_cell(agree),
             _fmt(agree.max_abs_logit_error if agree else None, 4),
             _fmt(agree.mean_abs_logit_error if agree else None, 4),
             _fmt(cold.cold_start_s if cold else None, 2), _fmt(memory.peak_rss_mib if memory else None, 0),
             _fmt(memory.gpu_mib if memory else None, 0), _fmt(c.bytes / 1e6 if c.bytes else None)]
        )  # fmt: skip
    lines += _table(header, body)
    scored = [c for c in results.configs if c.accuracy is not None]
    if scored:
        labels = list(scored[0].accuracy.f1)  # type: ignore[union-attr]
        lines += ["", "### F1 per class", ""]
        body = [
            [c.model_key, c.backend, c.precision] + [_fmt(c.accuracy.f1.get(label), 2) for label in labels]  # type: ignore[union-attr]
            for c in scored
        ]
        lines += _table(["model", "backend", "precision", *labels], body)
    rated = [c for c in results.configs if c.rated is not None]
    if rated:
        lines += ["", "### Dimensions against the ratings (CCC, Pearson's r, MAE)", ""]
        names = list(rated[0].rated.dimensions)  # type: ignore[union-attr]
        body = [
            [c.model_key, c.backend, c.precision]
            + [f"{r.ccc[d]:.3f} / {r.pearson[d]:.3f} / {r.mae[d]:.3f}" for d in names]
            for c in rated
            if (r := c.rated) is not None
        ]
        lines += _table(["model", "backend", "precision", *names], body)
    failed = [c for c in results.configs if c.error]
    if failed:
        lines += ["", "## Failed configurations", ""]
        lines += [f"- `{c.key}`: {c.error}" for c in failed]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def is_peer(config: ConfigResult) -> bool:
    """What a user would run instead of ser: OpenVINO's own conversion, PyTorch's dynamic INT8 or compile."""
    return config.backend == "openvino" or (config.backend.startswith("pytorch") and not config.reference)


def verdict(config: ConfigResult) -> tuple[bool, str]:
    """Whether ser vouches for this configuration's answers, and why: an INT8 bundle's gate names the CPU
    engines it passed on; an FP32 or FP16 bundle was validated against PyTorch at export."""
    export = config.export or {}
    if config.precision.startswith("int8"):
        judged = export.get("gate_backends") or []
        passed = config.backend in judged
        judged_on = ", ".join(judged) or "no engine"
        return passed, f"gate passed ({judged_on})" if passed else f"gate not run on it ({judged_on})"
    validated = export.get("max_abs_logit_error") is not None
    return validated, "validated at export" if validated else "not validated"


def against_peers(results: Results) -> list[dict[str, Any]]:
    """Per model and case: ser's fastest verified configuration (`verdict`) and the fastest peer, by speed-up
    over the same reference, with their ratio (above 1: ser ahead)."""
    table = []
    ran = [c for c in results.configs if c.cases and not c.reference and not c.error]
    for model in dict.fromkeys(c.model_key for c in ran):
        mine = [c for c in ran if c.model_key == model and not is_peer(c) and verdict(c)[0]]
        peers = [c for c in ran if c.model_key == model and is_peer(c)]
        for case in dict.fromkeys((k.batch, k.seconds) for c in mine + peers for k in c.cases):

            def fastest(configs: list[ConfigResult], case=case) -> tuple[ConfigResult, float] | None:
                timed = [(c, k.speedup) for c in configs if (k := c.case(*case)) is not None and k.speedup]
                return max(timed, key=lambda pair: pair[1], default=None)

            best, peer = fastest(mine), fastest(peers)
            if best is None or peer is None:
                continue
            table.append({"model": model, "batch": case[0], "seconds": case[1], "ser": best[0],
                          "ser_speedup": best[1], "peer": peer[0], "peer_speedup": peer[1],
                          "ratio": best[1] / peer[1]})  # fmt: skip
    return table


def _against_peers(results: Results) -> list[str]:
    table = against_peers(results)
    if not table:
        return []
    ahead = sum(row["ratio"] >= 1 for row in table)
    header = ["model", "batch", "clip s", "ser's fastest", "speed-up", "its verdict", "fastest peer", "speed-up",
              "ser / peer"]  # fmt: skip
    body = [
        [r["model"], str(r["batch"]), f"{r['seconds']:g}", f"{r['ser'].backend} {r['ser'].precision}",
         f"{r['ser_speedup']:.2f}x", verdict(r["ser"])[1], f"{r['peer'].backend} {r['peer'].precision}",
         f"{r['peer_speedup']:.2f}x", f"**{r['ratio']:.2f}**" if r["ratio"] >= 1 else f"{r['ratio']:.2f}"]
        for r in table
    ]  # fmt: skip
    return [
        "",
        "## ser against the peers",
        "",
        f"ser's fastest verified configuration (either engine, any precision; INT8 only on an engine its gate "
        f"passed it on) against the fastest peer, each by its speed-up over the same PyTorch reference: ser at or "
        f"ahead in {ahead} of {len(table)} cases.",
        "",
        *_table(header, body),
    ]


def print_table(results: Results, console=None) -> None:
    """The run's rows as a rich table in the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ser-bench {results.suite['name']}", show_lines=False)
    for column in ("model", "backend", "precision", "t", "batch", "clip s", "p50 ms", "p99 ms", "audio ×",
                   "speed-up", "agree", "acc"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("model", "backend", "precision") else "right")
    for r in rows(results):
        if r["error"] and r["batch"] is None:
            table.add_row(r["model"], r["backend"], r["precision"], str(r["threads"]), "", "", "[red]failed[/red]")
            continue
        table.add_row(
            r["model"], r["backend"], r["precision"], str(r["threads"]), str(r["batch"]), f"{r['seconds']:g}",
            _fmt(r["p50_ms"]), _fmt(r["p99_ms"]), _fmt(r["audio_x"]),
            f"{r['speedup']:.2f}x" if r["speedup"] else "–",
            f"{100 * r['top1_agreement']:.0f} %" if r["top1_agreement"] is not None else
            f"CCC {r['min_ccc']:.4f}" if r["min_ccc"] is not None else "–",
            _fmt(r["accuracy"], 3),
        )  # fmt: skip
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 150)  # a log file: do not squeeze the columns to 80
    console.print(table)
    for config in results.configs:
        if config.error:
            console.print(f"[red]{config.key}[/red]: {config.error}")


def _agreement_cell(agreement: Agreement | None) -> str:
    """The kind's own measure: top-1 agreement, or the lowest CCC of a dimensional model's dimensions."""
    if agreement is None:
        return "–"
    if agreement.min_ccc is not None:
        return f"CCC {agreement.min_ccc:.4f}"
    return f"{100 * agreement.top1_agreement:.1f} %"
