"""The accuracy report is computed from the runs on disk: mean ± sample standard deviation over the seeds, each
seed's scores, and the command with the seed as a variable."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import accuracy_benchmarks  # noqa: E402


def write_run(folder: Path, seed: int, dev_f1: float, test_f1: float, resumed: bool = False) -> None:
    folder.mkdir(parents=True)
    (folder / "all_results.json").write_text(
        json.dumps({"eval_f1": dev_f1, "test_f1": test_f1, "train_runtime": 600.0 + seed})
    )
    (folder / "model.safetensors").write_bytes(b"\0" * 2_000_000)
    record = {
        "task": "wnut17",
        "seed": seed,
        "command": f"OMP_NUM_THREADS=1 python scripts/run_ner.py --output_dir outputs/accuracy/wnut17/seed-{seed} "
        f"--seed {seed}",
        "load_seconds": 3.0 + seed / 100,
        "resumed": resumed,
        "machine": "a CPU, 2 cores, 1 thread per run",
        "date": "2026-12-01",
        "versions": {"torch": "2.13.0"},
    }
    (folder / "run.json").write_text(json.dumps(record))


def test_report_gives_mean_and_spread_of_the_finished_runs(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "wnut17" / "seed-42", 42, 0.40, 0.30)
    write_run(runs / "wnut17" / "seed-43", 43, 0.44, 0.34, resumed=True)
    (runs / "wnut17" / "seed-44").mkdir()  # stopped before it finished: not counted
    report = tmp_path / "accuracy.md"

    accuracy_benchmarks.main(["report", "--output_dir", str(runs), "--report", str(report)])

    page = report.read_text()
    assert "| 2 (mean ± std) | 42.00 ± 2.83 | 32.00 ± 2.83 | 10.7–10.7 min | 2 MB | 3.4–3.4 s |" in page
    assert "| seed 43 | 44.00 | 34.00 | resumed after a stop | | |" in page
    assert "for SEED in 42 43; do" in page and "--seed $SEED" in page and "seed-$SEED" in page
