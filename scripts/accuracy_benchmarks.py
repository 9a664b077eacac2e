#!/usr/bin/env python
"""Accuracy benchmarks: train each task's recipe over several seeds with the training scripts, then write
`docs/benchmarks/accuracy.md` with the mean ± standard deviation of every score, each run's figures, the commands,
the machine and the versions.

    python scripts/accuracy_benchmarks.py run conll2003 --seeds 42 43 44   # one run after the other
    python scripts/accuracy_benchmarks.py run wnut17 wnut17-scratch --seeds 42 43 44 --jobs 2
    python scripts/accuracy_benchmarks.py report                            # the page, from the runs on disk

Each run trains in its own process with one thread (`OMP_NUM_THREADS=1`) and writes `outputs/accuracy/<task>/
seed-<seed>/`; `run.json` there records the command, the wall time and the machine. The data of every task but
WNUT-17 is read from `--data_dir` (default `../shared/data`, see each folder's SOURCE.md); CoNLL-2003 is not openly
licensed: use it for local benchmark runs only.
"""

import argparse
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from hf_birnn.model_card import cpu_name
from hf_birnn.run_folders import RESUME_LAST, last_complete_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT_DIR = REPO_ROOT / "outputs" / "accuracy"
DEFAULT_REPORT = REPO_ROOT / "docs" / "benchmarks" / "accuracy.md"
SCRATCH_CONLL = (
    "embedding_size=128,hidden_size=256,num_hidden_layers=2,embedding_dropout=0.3,hidden_dropout=0.3,"
    "classifier_dropout=0.3,word_dropout=0.05,use_crf=true,crf_constraints=iob2,character_filters=50"
)
SCRATCH_POS = (
    "embedding_size=128,hidden_size=256,num_hidden_layers=2,embedding_dropout=0.3,hidden_dropout=0.3,"
    "classifier_dropout=0.3,word_dropout=0.05,character_filters=50,embedding_initializer_range=1.0"
)
VECTORS_POS = (
    "hidden_size=256,num_hidden_layers=2,cell_type=lstm,character_filters=50,embedding_dropout=0.3,"
    "hidden_dropout=0.3,classifier_dropout=0.3,word_dropout=0.05"
)
CONLL_FILES = "--train_file {data}/conll2003/eng.train --validation_file {data}/conll2003/eng.testa " + (
    "--test_file {data}/conll2003/eng.testb --conll_column_names tokens,pos,chunk,ner_tags "
    "--dataset_license 'other (Reuters RCV1 research agreement; benchmark use only)'"
)
EWT_FILES = (
    "--task_name pos --label_column_name upos --train_file {data}/ud_english_ewt/en_ewt-ud-train.conllu "
    "--validation_file {data}/ud_english_ewt/en_ewt-ud-dev.conllu "
    "--test_file {data}/ud_english_ewt/en_ewt-ud-test.conllu --dataset_license cc-by-sa-4.0"
)
BANKING_FILES = (
    "--train_file {data}/banking77/train.csv --test_file {data}/banking77/test.csv --label_column_name category "
    "--label_list_file {data}/banking77/categories.json --dataset_license cc-by-4.0 --dataset_attribution "
    "'BANKING77 by PolyAI: Casanueva et al. (2020), Efficient Intent Detection with Dual Sentence Encoders, "
    "arXiv:2003.04807.'"
)


@dataclass(frozen=True)
class Task:
    title: str  # the data, the splits scored and the metric
    script: str
    arguments: str  # `{data}` stands for --data_dir
    metric: str  # the score reported, as the scripts name it (eval_<metric>, test_<metric>)
    splits: tuple[str, str] = ("dev", "test")


TASKS = {
    "conll2003": Task(
        "CoNLL-2003 English NER, entity F1 (dev `eng.testa`, test `eng.testb`), GloVe 6B 50d",
        "run_ner.py",
        CONLL_FILES + " --word_vectors glove-6b-50d --num_train_epochs 20",
        "f1",
    ),
    "conll2003-scratch": Task(
        "CoNLL-2003 English NER, entity F1, embeddings learnt from scratch (WordPiece 16,000)",
        "run_ner.py",
        CONLL_FILES + f" --word_vectors none --config_overrides {SCRATCH_CONLL} --tokenizer_vocab_size 16000 "
        "--num_train_epochs 15",
        "f1",
    ),
    "wnut17": Task(
        "WNUT-17 emerging entities, entity F1 (dev `emerging.dev.conll`, test `emerging.test.annotated`): the main "
        "job, `python scripts/run_ner.py`",
        "run_ner.py",
        "--word_vectors glove-6b-50d",
        "f1",
    ),
    "wnut17-scratch": Task(
        "WNUT-17, entity F1, the main job without word vectors", "run_ner.py", "--word_vectors none", "f1"
    ),
    "ewt-upos": Task(
        "UD English-EWT UPOS, word accuracy (dev and test `.conllu`), GloVe 6B 50d",
        "run_ner.py",
        EWT_FILES + f" --word_vectors glove-6b-50d --config_overrides {VECTORS_POS} --num_train_epochs 15",
        "accuracy",
    ),
    "ewt-upos-scratch": Task(
        "UD English-EWT UPOS, word accuracy, embeddings learnt from scratch",
        "run_ner.py",
        EWT_FILES + f" --word_vectors none --config_overrides {SCRATCH_POS} --tokenizer_vocab_size 16000 "
        "--num_train_epochs 10",
        "accuracy",
    ),
    "banking77": Task(
        "Banking77 intents, accuracy (validation: 1,000 rows carved from train; test), GloVe 6B 50d",
        "run_classification.py",
        BANKING_FILES + " --word_vectors glove-6b-50d",
        "accuracy",
        ("validation", "test"),
    ),
    "banking77-scratch": Task(
        "Banking77 intents, accuracy, embeddings learnt from scratch",
        "run_classification.py",
        BANKING_FILES + " --word_vectors none",
        "accuracy",
        ("validation", "test"),
    ),
}


def run_folder(output_dir: Path, task: str, seed: int) -> Path:
    return output_dir / task / f"seed-{seed}"


def command_of(task: Task, data_dir: str, folder: Path, seed: int, resume: bool) -> list[str]:
    """The training command; a run that was stopped resumes from its last complete checkpoint, which gives the
    weights the uninterrupted run would have."""
    arguments = shlex.split(task.arguments.format(data=data_dir))
    return [
        sys.executable,
        str(REPO_ROOT / "scripts" / task.script),
        *arguments,
        "--output_dir",
        str(folder),
        "--seed",
        str(seed),
        "--run_demo",
        "false",
        *(["--resume_from_checkpoint", RESUME_LAST] if resume else ["--overwrite_output_dir"]),
    ]


def run_one(name: str, seed: int, args: argparse.Namespace) -> Path:
    folder = run_folder(args.output_dir, name, seed)
    resume = not (folder / "run.json").is_file() and last_complete_checkpoint(folder) is not None
    command = command_of(TASKS[name], args.data_dir, folder, seed, resume)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    folder.parent.mkdir(parents=True, exist_ok=True)
    log_path = folder.parent / f"seed-{seed}.log"
    print(f"{name} seed {seed}: {shlex.join(command[1:])}\n  log: {log_path}", flush=True)
    started = time.monotonic()
    with open(log_path, "w") as log:
        completed = subprocess.run(command, cwd=REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed (exit {completed.returncode}); see {log_path}")
    record = {
        "load_seconds": load_seconds(folder, TASKS[name]),
        "task": name,
        "seed": seed,
        "command": "OMP_NUM_THREADS=1 python " + shlex.join(command[1:]).replace(str(REPO_ROOT) + "/", ""),
        "wall_seconds": round(time.monotonic() - started, 1),
        "resumed": resume,  # then `train_runtime` covers only the part after the restart
        "machine": machine_description(),
        "date": datetime.date.today().isoformat(),
        "versions": versions(),
    }
    (folder / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name} seed {seed}: done in {record['wall_seconds'] / 60:.1f} min", flush=True)
    return folder


LOAD_TIMER = """
import sys, time
import hf_birnn
from transformers import pipeline
started = time.perf_counter()
pipeline(sys.argv[2], model=sys.argv[1], device="cpu")
print(time.perf_counter() - started)
"""


def load_seconds(folder: Path, task: Task) -> float:
    """Seconds a fresh process takes to build the saved model's pipeline (weights, config and tokenizer), its
    imports aside: what a user waits for `pipeline(..., model=folder)`."""
    pipeline_task = "token-classification" if task.script == "run_ner.py" else "text-classification"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", LOAD_TIMER, str(folder), pipeline_task]
    output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout
    return round(float(output.split()[-1]), 2)


def machine_description() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores, 1 thread per run"


def versions() -> dict[str, str]:
    return {name: version(name) for name in ("torch", "transformers", "tokenizers", "hf_birnn")}


# ---------------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------------


def collect_runs(output_dir: Path, name: str) -> list[dict]:
    """One entry per finished run of `name`: its record and results."""
    runs = []
    for folder in sorted((output_dir / name).glob("seed-*")):
        if (folder / "run.json").is_file() and (folder / "all_results.json").is_file():
            runs.append({**json.loads((folder / "run.json").read_text()), "results": read_results(folder)})
    return runs


def read_results(folder: Path) -> dict:
    """The run's scores, and the size of what `from_pretrained` and the pipeline load (weights, config,
    tokenizer)."""
    results = json.loads((folder / "all_results.json").read_text())
    saved = [path for path in folder.iterdir() if path.is_file() and path.suffix in (".safetensors", ".json")]
    return {**results, "saved_mb": sum(path.stat().st_size for path in saved) / 1e6}


def mean_and_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def task_section(name: str, runs: list[dict]) -> list[str]:
    task = TASKS[name]
    prefixes = {"dev": "eval", "validation": "eval", "test": "test"}
    lines = [f"### `{name}`: {task.title}", ""]
    scores = {
        split: [100 * run["results"][f"{prefixes[split]}_{task.metric}"] for run in runs] for split in task.splits
    }
    minutes = [run["results"]["train_runtime"] / 60 for run in runs]
    whole_minutes = [minute for run, minute in zip(runs, minutes, strict=True) if not run.get("resumed")]
    time_range = f"{min(whole_minutes):.1f}–{max(whole_minutes):.1f} min" if whole_minutes else "–"
    first_split, second_split = (f"{split} {task.metric}" for split in task.splits)
    lines += [f"| seeds | {first_split} | {second_split} | training time | saved size | pipeline load time |"]
    lines += ["| --- | ---: | ---: | ---: | ---: | ---: |"]
    load_times = [run["load_seconds"] for run in runs]
    load_range = f"{min(load_times):.1f}–{max(load_times):.1f} s"
    lines.append(
        f"| {len(runs)} (mean ± std) | {mean_and_spread(scores[task.splits[0]])} | "
        f"{mean_and_spread(scores[task.splits[1]])} | {time_range} | "
        f"{runs[0]['results']['saved_mb']:.0f} MB | {load_range} |"
    )
    for run, first, second, minute in zip(runs, *scores.values(), minutes, strict=True):
        duration = "resumed after a stop" if run.get("resumed") else f"{minute:.1f} min"
        lines.append(f"| seed {run['seed']} | {first:.2f} | {second:.2f} | {duration} | | |")
    seed = runs[0]["seed"]
    command = runs[0]["command"].replace(f"--seed {seed}", "--seed $SEED").replace(f"seed-{seed}", "seed-$SEED")
    command = command.replace(f"{REPO_ROOT.parent}/", "../")  # the data beside the clone, as --data_dir says
    seeds = " ".join(str(run["seed"]) for run in runs)
    lines += ["", "```bash", f"for SEED in {seeds}; do", command, "done", "```", ""]
    return lines


def write_report(args: argparse.Namespace) -> Path:
    sections, machines, dates, all_versions = [], set(), set(), {}
    for name in TASKS:
        runs = collect_runs(args.output_dir, name)
        if runs:
            sections += task_section(name, runs)
            machines.update(run["machine"] for run in runs)
            dates.update(run["date"] for run in runs)
            all_versions = runs[-1]["versions"]
    if not sections:
        raise SystemExit(f"No finished runs under {args.output_dir}: run `accuracy_benchmarks.py run <task>` first.")
    lines = [
        "# Accuracy benchmarks",
        "",
        "Written by `python scripts/accuracy_benchmarks.py report` from the runs of "
        "`python scripts/accuracy_benchmarks.py run <task> --seeds …`; do not edit by hand. Scores are percentages, "
        "the mean ± sample standard deviation over the seeds, each run scored with the checkpoint of its best "
        "validation score; training time is the Trainer's `train_runtime`.",
        "",
        f"Machine: {'; '.join(sorted(machines))}. Versions: "
        + ", ".join(f"{package} {value}" for package, value in all_versions.items())
        + f". Runs from {min(dates)} to {max(dates)}.",
        "",
        *sections,
    ]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines).rstrip() + "\n")
    print(f"Wrote {args.report}")
    return args.report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="Train the tasks' recipes over the seeds.")
    run.add_argument("tasks", nargs="+", choices=sorted(TASKS))
    run.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    run.add_argument("--jobs", type=int, default=1, help="Runs at once (each uses one thread).")
    run.add_argument("--data_dir", default="../shared/data", help="Relative to the repository root.")
    report = commands.add_parser("report", help="Write the Markdown page from the runs on disk.")
    for command in (run, report):
        command.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR)
        command.add_argument("--report", type=Path, default=DEFAULT_REPORT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "run":
        jobs = [(name, seed) for name in args.tasks for seed in args.seeds]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda job: run_one(*job, args), jobs))
    write_report(args)


if __name__ == "__main__":
    main()
