"""Timing and reporting shared by every section: interleaved rounds, medians and ratios, and the Report that keeps
each section's tables, notes and figures for the JSON file and the Markdown pages."""

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .sizes import Sizes

REPO_ROOT = Path(__file__).resolve().parents[2]

# The timer of every measurement (`--clock`). CPU time of the process leaves out the time other processes hold the
# cores, which on a shared machine is most of the noise of wall-clock time; with one thread the two agree when idle.
CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
CLOCK_DESCRIPTIONS = {"cpu": "process CPU time", "wall": "wall-clock time"}
_clock = CLOCKS["cpu"]

Row = list[object]
LoadAverage = tuple[float, float, float]


def use_clock(name: str) -> None:
    """Selects the timer that `now` reads (`--clock`), for every section at once."""
    global _clock
    _clock = CLOCKS[name]


def now() -> float:
    """Seconds on the clock chosen by `--clock`; only differences mean anything."""
    return _clock()


def interleaved(
    variants: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True, calls: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each variant over `repeats` rounds, after one warm-up call each; a round runs every
    variant `calls` times, in turn (several calls per sample steady the timing of short ones)."""
    for run in variants.values() if warm_up else ():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = now()
            for _ in range(calls):
                run()
            times[name].append((now() - start) / calls)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of time(name) / time(baseline): above 1 means `name` is slower."""
    return statistics.median(a / b for a, b in zip(times[name], times[baseline], strict=True))


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def cell(value: object) -> str:
    """A table cell as Markdown: floats to three significant digits (thousands separated), pipes escaped."""
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = str(value)
    return text.replace("|", "\\|")


def markdown_table(headers: list[str], rows: list[Row]) -> str:
    lines = ["| " + " | ".join(cell(header) for header in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Figure:
    """A plot a section saved, with the words its page shows for it."""

    path: Path
    caption: str


@dataclass
class SectionRecord:
    """What one section produced, and under which load, for its page."""

    name: str
    table_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    seconds: float = 0.0
    load_before: LoadAverage = (0.0, 0.0, 0.0)
    load_after: LoadAverage = (0.0, 0.0, 0.0)


class Report:
    """Prints each table as Markdown when it is complete and keeps everything: `tables` for the JSON file (keyed by
    table), `sections` for the pages (which tables, notes and figures each section made)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict] = {}
        self.sections: dict[str, SectionRecord] = {}
        self._current: SectionRecord | None = None

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[SectionRecord]:
        """Files what is reported inside under section `name`, and times it."""
        record = SectionRecord(name, load_before=os.getloadavg())
        self.sections[name] = record
        self._current = record
        start = time.perf_counter()
        try:
            yield record
        finally:
            record.seconds = time.perf_counter() - start
            record.load_after = os.getloadavg()
            self._current = None
        print(f"({name}: {record.seconds:.0f} s)", flush=True)

    def table(self, key: str, title: str, headers: list[str], rows: list[Row]) -> None:
        self.tables[key] = {"title": title, "headers": headers, "rows": rows}
        if self._current is not None:
            self._current.table_keys.append(key)
        print(f"\n### {title}\n\n{markdown_table(headers, rows)}", flush=True)

    def note(self, text: str) -> None:
        """A result that is a sentence rather than a table row."""
        if self._current is not None:
            self._current.notes.append(text)
        print(text, flush=True)

    def figure(self, path: Path, caption: str) -> None:
        if self._current is not None:
            self._current.figures.append(Figure(Path(path), caption))


SectionRun = Callable[[argparse.Namespace, Sizes, Report], None]


@dataclass(frozen=True)
class Section:
    """A `--only` name, the function that measures it, and what its page says about it."""

    name: str
    run: SectionRun
    title: str
    summary: str
    goal: str | None = None
    packages: tuple[str, ...] = ()  # whose versions its page names besides python, torch, transformers and hf_birnn
