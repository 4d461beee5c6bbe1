"""`ser-bench compare A.json B.json`: what changed between two runs, and whether it is more than noise.

Each configuration and case present in both runs gets the ratio of median latencies (B over A)
with a bootstrap 95 % interval from the raw samples. A change counts only when the interval
excludes 1 and the ratio moves by more than `threshold` (runs on different days differ by a few
per cent for reasons no code change explains); agreement changes are listed as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ser.bench.measure import median_ratio
from ser.bench.report import JSON_NAME
from ser.bench.results import Case, ConfigResult, Results


@dataclass(frozen=True)
class Change:
    key: str  # configuration
    batch: int
    seconds: float
    before_ms: float
    after_ms: float
    ratio: float  # after / before median latency: above 1 is slower
    low: float
    high: float
    verdict: str  # "slower", "faster" or "same"
    agreement_before: float | None
    agreement_after: float | None


def load_results(path: str | Path) -> Results:
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such results file") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a results.json ({error})") from None
    if not isinstance(results, dict) or "configs" not in results:
        raise ValueError(f"{path}: not a ser-bench results.json (no 'configs')")
    try:
        return Results.from_json(results)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a results.json of this ser-bench ({type(error).__name__}: {error})") from None


def compare(before: Results, after: Results, threshold: float = 0.05) -> list[Change]:
    def cases(results: Results) -> dict[tuple[str, int, float], tuple[ConfigResult, Case]]:
        return {(r.key, c.batch, c.seconds): (r, c) for r in results.configs for c in r.cases}

    old, new = cases(before), cases(after)
    changes = []
    for key in old.keys() & new.keys():
        (record_a, case_a), (record_b, case_b) = old[key], new[key]
        ratio, low, high = median_ratio(case_a.samples_s, case_b.samples_s)
        verdict = "same"
        if low > 1 and ratio > 1 + threshold:
            verdict = "slower"
        elif high < 1 and ratio < 1 - threshold:
            verdict = "faster"
        changes.append(
            Change(
                *key,
                before_ms=case_a.p50_ms,
                after_ms=case_b.p50_ms,
                ratio=ratio,
                low=low,
                high=high,
                verdict=verdict,
                agreement_before=record_a.agreement.top1_agreement if record_a.agreement else None,
                agreement_after=record_b.agreement.top1_agreement if record_b.agreement else None,
            )
        )
    return sorted(changes, key=lambda c: (c.key, c.batch, c.seconds))


def print_changes(changes: list[Change], only_a: list[str], only_b: list[str], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ser-bench compare (B over A; 95 % bootstrap interval)")
    for column in ("configuration", "batch", "clip s", "A p50 ms", "B p50 ms", "B/A", "interval", "verdict",
                   "agreement A → B"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("configuration", "verdict") else "right")
    colour = {"slower": "red", "faster": "green", "same": "dim"}
    for c in changes:
        agreement = (
            f"{100 * c.agreement_before:.1f} → {100 * c.agreement_after:.1f} %"
            if c.agreement_before is not None and c.agreement_after is not None
            else "–"
        )
        table.add_row(
            c.key, str(c.batch), f"{c.seconds:g}", f"{c.before_ms:.1f}", f"{c.after_ms:.1f}", f"{c.ratio:.3f}",
            f"{c.low:.3f}–{c.high:.3f}", f"[{colour[c.verdict]}]{c.verdict}[/]", agreement,
        )  # fmt: skip
    console = console or Console()
    console.print(table)
    for label, keys in (("only in A", only_a), ("only in B", only_b)):
        if keys:
            console.print(f"{label}: {', '.join(keys)}")


def unmatched(before: Results, after: Results) -> tuple[list[str], list[str]]:
    """Configurations timed in only one of the two runs."""
    a = {r.key for r in before.configs if r.cases}
    b = {r.key for r in after.configs if r.cases}
    return sorted(a - b), sorted(b - a)
