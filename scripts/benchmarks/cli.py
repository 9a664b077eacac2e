"""The flags, the sections in run order, and the run: tables printed as each completes, then results.json in
`--output_dir` and the Markdown pages in `--docs_dir`."""

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import datasets
import torch
import transformers

from . import __doc__ as OVERVIEW
from . import denormal, overhead, pipeline, scaling, serving, trainer
from .common import CLOCKS, REPO_ROOT, Report, Section, use_clock
from .environment import describe_run
from .pages import write_pages
from .sizes import QUICK_SIZES, Sizes

SECTIONS: tuple[Section, ...] = (
    overhead.SECTION,
    trainer.SECTION,
    serving.INT8,
    serving.ONNX,
    scaling.SECTION,
    pipeline.SECTION,
    denormal.SECTION,
)
SECTION_NAMES = tuple(section.name for section in SECTIONS)
BY_NAME = {section.name: section for section in SECTIONS}
DEFAULT_DOCS_DIR = REPO_ROOT / "docs" / "benchmarks"
QUICK_DOCS_SUBDIR = "docs"  # under --output_dir: where --quick writes its pages unless --docs_dir is given


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=OVERVIEW, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per measurement (median)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time or wall-clock time")
    parser.add_argument("--only", default=",".join(SECTION_NAMES), help=f"comma-separated sections of {SECTION_NAMES}")
    parser.add_argument("--model", default="outputs/wnut17-bilstm", help="trained tagger (see the command above)")
    parser.add_argument("--output_dir", default="outputs/benchmark", help="results.json and length_scaling.png")
    parser.add_argument(
        "--docs_dir",
        type=Path,
        default=None,
        help=f"where the Markdown pages go (default: {DEFAULT_DOCS_DIR.relative_to(REPO_ROOT)} of the repository; "
        f"with --quick, OUTPUT_DIR/{QUICK_DOCS_SUBDIR}, so that a smoke test never replaces measured pages)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 round: checks that everything runs")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTION_NAMES)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTION_NAMES}")
    if args.quick:
        args.repeats = 1
    if args.docs_dir is None:
        args.docs_dir = Path(args.output_dir) / QUICK_DOCS_SUBDIR if args.quick else DEFAULT_DOCS_DIR
    return args


def quiet_libraries() -> None:
    """No progress bars or deprecation warnings between the tables; one thread for the tokenizer too."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> dict:
    """Runs the sections of `--only` in order; returns what results.json holds."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run_info = describe_run(args, argv)
    torch.set_num_threads(args.threads)
    use_clock(args.clock)
    quiet_libraries()
    sizes = QUICK_SIZES if args.quick else Sizes()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, {args.repeats} rounds, "
        f"{args.clock} clock; "
        f"load average before: {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} (1 / 5 / 15 min)"
    )
    report = Report()
    start = time.perf_counter()
    for name in args.only.split(","):
        with report.section(name):
            BY_NAME[name].run(args, sizes, report)
    load_after = os.getloadavg()
    print(
        f"\nTotal {time.perf_counter() - start:.0f} s; load average after: {load_after[0]:.1f} / {load_after[1]:.1f}"
    )
    results = {
        "threads": args.threads,
        "repeats": args.repeats,
        "clock": args.clock,
        "torch": torch.__version__,
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "sizes": asdict(sizes),
        "tables": report.tables,
    }
    (Path(args.output_dir) / "results.json").write_text(json.dumps(results, indent=2, default=str))
    pages = write_pages(args.docs_dir, report, run_info, SECTIONS)
    print(f"Pages: {', '.join(str(page) for page in pages)}")
    return results
