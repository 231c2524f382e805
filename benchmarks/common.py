"""Shared helpers: interleaved rounds, medians, paired ratios, the results model.

Every workload runs its contenders in turn within a round (A B C, then B C A,
then C A B, ...), so a burst of machine noise lands on all of them alike, and
reports medians over the rounds. Ratios are *paired*: each round's figure of a
contender divided by the baseline's figure of the same round, then the median
of those per-round ratios, which cancels drift slower than one round.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MET = "met"
MISSED = "MISSED"
NO_TARGET = "-"


def rotations(names: Sequence[str], rounds: int) -> list[list[str]]:
    """The running order of each round: the contenders in turn, rotated each round."""
    names = list(names)
    out = []
    for r in range(rounds):
        k = r % len(names) if names else 0
        out.append(names[k:] + names[:k])
    return out


def interleave(
    names: Sequence[str], rounds: int, run_one: Callable[[str, int], Any]
) -> dict[str, list[Any]]:
    """``run_one(name, round)`` for every contender in every round, in turn."""
    results: dict[str, list[Any]] = {n: [] for n in names}
    for r, order in enumerate(rotations(names, rounds)):
        for name in order:
            results[name].append(run_one(name, r))
    return results


def median(values: Sequence[float | None]) -> float:
    """Median of the values measured (a round a contender sat out is None)."""
    return float(statistics.median([v for v in values if v is not None]))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """(25th, 75th) percentile; for a single value, that value twice."""
    if len(values) < 2:
        return (values[0], values[0])
    q = statistics.quantiles(values, n=4, method="inclusive")
    return (q[0], q[2])


def paired_ratios(values: Sequence[float | None], baseline: Sequence[float | None]) -> list[float]:
    """Per-round ratios, over the rounds where both were measured."""
    return [
        v / b
        for v, b in zip(values, baseline, strict=True)
        if v is not None and b is not None and b > 0
    ]


def paired_deltas(values: Sequence[float | None], baseline: Sequence[float | None]) -> list[float]:
    return [v - b for v, b in zip(values, baseline, strict=True) if v is not None and b is not None]


def timed(fn: Callable[[], Any]) -> float:
    """Seconds taken by ``fn()``, after a collection so no earlier garbage is billed."""
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fmt_ratio(values: Sequence[float]) -> str:
    """'1.04x (1.02-1.06)': median and interquartile range of paired ratios."""
    if not values:
        return "n/a"
    lo, hi = quartiles(values)
    return f"{median(values):.2f}x ({lo:.2f}-{hi:.2f})"


def fmt_delta(values: Sequence[float], digits: int = 2) -> str:
    """'+2.01 (+1.17..+3.09)': median and interquartile range of paired differences."""
    if not values:
        return "n/a"
    lo, hi = quartiles(values)
    return f"{median(values):+,.{digits}f} ({lo:+,.{digits}f}..{hi:+,.{digits}f})"


def fmt_num(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 1000 and digits <= 1 else f"{value:,.{digits}f}"
    return f"{text}{unit}"


def status(ok: bool | None) -> str:
    if ok is None:
        return NO_TARGET
    return MET if ok else MISSED


@dataclass
class Section:
    """One table of RESULTS.md."""

    key: str
    title: str
    columns: list[str]
    intro: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: columns naming a row in the summary, and the columns holding its figures
    label_cols: list[str] = field(default_factory=list)
    figure_cols: list[str] = field(default_factory=list)

    def add(self, row_id: str, **cells: Any) -> None:
        """A row; ``cells`` are keyed by column name (missing ones read "n/a")."""
        row = {"id": f"{self.key}/{row_id}", **{c: "n/a" for c in self.columns}}
        row.update(cells)
        self.rows.append(row)

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.intro:
            lines += [self.intro, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("| " + " | ".join("---" for _ in self.columns) + " |")
        for row in self.rows:
            cells = [str(row.get(c, "")).replace("|", "\\|") for c in self.columns]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for note in self.notes:
            lines.append(f"- {note}")
        if self.notes:
            lines.append("")
        return "\n".join(lines)

    def targets(self) -> list[tuple[str, str, str, str]]:
        """(what, target, measured, status) of every row that has a target."""
        out = []
        for row in self.rows:
            target = str(row.get("target") or row.get("target (whodid)") or NO_TARGET)
            if target == NO_TARGET or target.startswith("pip install"):
                continue
            what = " / ".join(str(row.get(c, "")) for c in self.label_cols)
            measured = "; ".join(f"{c}: {row.get(c, '')}" for c in self.figure_cols)
            out.append((f"{self.title}: {what}", target, measured, str(row.get("status", ""))))
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
        }
