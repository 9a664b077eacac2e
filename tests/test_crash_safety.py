"""Crash safety of a training run's output folder (`hf_birnn.run_folders`): a run killed with SIGKILL in a training
step, while writing a checkpoint or during the final save, then resumed with `--resume_from_checkpoint last`, ends
with the weights of an uninterrupted run and never resumes from a half-written checkpoint; the output folder never
holds a new config beside old weights; a folder holding another run is refused or replaced as a whole; `--fp16`
without a GPU is refused; and the pieces of `hf_birnn.run_folders` on hand-made folders.

The kills are deterministic: `run_ner.main` runs in a subprocess whose wrapper patches one function to SIGKILL its
own process at a chosen call. The resumed runs run in this process."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from test_run_ner import REPO_ROOT, conll_args, make_sentences, run_ner, write_conll
from transformers import AutoModelForTokenClassification
from transformers.trainer_utils import get_last_checkpoint

from hf_birnn import run_folders
from hf_birnn.run_folders import (
    checkpoint_problem,
    exchange_folders,
    last_complete_checkpoint,
    prepare_output_dir,
    resolve_resume_checkpoint,
    staged_output_dir,
)
from hf_birnn.tokenization import train_wordpiece_tokenizer
from hf_birnn.training import prepare_run

# 32 rows in batches of 8: 4 steps an epoch, 8 in all; a checkpoint every 3 steps and one at the end, of which
# `save_total_limit` 2 keeps the last two: checkpoint-3, checkpoint-6, then checkpoint-6 and checkpoint-8
STEPS_RUN = (
    "--num_train_epochs", "2", "--seed", "7", "--save_strategy", "steps", "--save_steps", "3",
    "--do_eval", "false", "--do_predict", "false", "--eval_strategy", "no", "--load_best_model_at_end", "false",
)  # fmt: skip
RESUME_LAST = ("--resume_from_checkpoint", "last")

# The subprocess: `kill_at(owner, name, call)` makes the `call`-th call of `owner.name` SIGKILL the process, before
# the original runs (or after it, with `after=True`), counting only calls for which `only(*args)` holds
KILLED_RUN = """
import json, os, signal, sys
sys.path.insert(0, sys.argv[1])
import run_ner

def kill_at(owner, name, call, after=False, only=lambda *args, **kwargs: True):
    original, calls = getattr(owner, name), []
    def patched(*args, **kwargs):
        counted = only(*args, **kwargs)
        calls.extend([None] if counted else [])
        if counted and len(calls) == call and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if counted and len(calls) == call and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(owner, name, patched)

{patch}
run_ner.main(json.loads(sys.argv[2]))
"""
# after the loss and gradients of the 7th step, before its optimizer step (checkpoint-3 and checkpoint-6 exist)
KILL_IN_TRAINING_STEP = """
from hf_birnn.training import BiRNNTrainer
kill_at(BiRNNTrainer, "training_step", 7, after=True)
"""
# the second checkpoint (checkpoint-6) has its weights, optimizer and scheduler but no RNG state nor trainer state
KILL_BEFORE_CHECKPOINT_RNG_STATE = """
from transformers import Trainer
kill_at(Trainer, "_save_rng_state", 2)
"""
# the second checkpoint's trainer_state.json is cut off in the middle
KILL_IN_CHECKPOINT_TRAINER_STATE = """
from transformers.trainer_callback import TrainerState
original_save = TrainerState.save_to_json
saves = []
def save_to_json(self, json_path):
    saves.append(json_path)
    original_save(self, json_path)
    if len(saves) == 2:
        os.truncate(json_path, os.path.getsize(json_path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
TrainerState.save_to_json = save_to_json
"""
# the staging folder holds the whole final save, the old folder is not yet swapped out
KILL_BEFORE_EXCHANGE = """
from hf_birnn import run_folders
kill_at(run_folders, "exchange_folders", 1)
"""
# the final save's weights are half written in the staging folder
KILL_IN_FINAL_WEIGHTS = """
import transformers.modeling_utils as modeling_utils
original_save = modeling_utils.safe_save_file
def safe_save_file(tensors, filename, metadata=None):
    original_save(tensors, filename, metadata=metadata)
    if os.path.basename(os.path.dirname(filename)).endswith(".staging"):
        os.truncate(filename, os.path.getsize(filename) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
modeling_utils.safe_save_file = safe_save_file
"""


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("conll")
    files = {}
    for split, count, seed in (("train", 32, 0), ("validation", 8, 1), ("test", 8, 2)):
        files[split] = folder / f"{split}.txt"
        write_conll(files[split], make_sentences(count, seed))
    # one tokenizer for the runs to compare: WordPiece training breaks frequency ties in no fixed order, so runs
    # that each trained their own would not start from the same ids
    files["tokenizer"] = folder / "tokenizer"
    texts = [" ".join(tokens) for tokens, _ in make_sentences(32, 0)]
    train_wordpiece_tokenizer(texts, vocab_size=200).save_pretrained(files["tokenizer"])
    return files


def run_args(files: dict[str, Path], output_dir: Path, *extra: str) -> list[str]:
    return conll_args(files, output_dir, *STEPS_RUN, "--tokenizer_name", str(files["tokenizer"]), *extra)


@pytest.fixture(scope="module")
def straight_run(tiny_files, tmp_path_factory) -> Path:
    """The uninterrupted run that the killed and resumed runs must end like."""
    output_dir = tmp_path_factory.mktemp("straight") / "run"
    run_ner.main(run_args(tiny_files, output_dir))
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    return output_dir


def run_killed(files: dict[str, Path], output_dir: Path, patch: str, *extra: str) -> subprocess.CompletedProcess:
    """`run_ner.main` in a subprocess with `patch` applied; asserts that the patch killed it."""
    argv = run_args(files, output_dir, *extra)
    script = KILLED_RUN.format(patch=patch)
    command = [sys.executable, "-c", script, str(REPO_ROOT / "scripts"), json.dumps(argv)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == -9, f"not killed (exit status {result.returncode}): {result.stderr[-3000:]}"
    return result


def resume_last(files: dict[str, Path], output_dir: Path, monkeypatch) -> str:
    """Resume the run of `output_dir` in this process with `--resume_from_checkpoint last`; returns the checkpoint
    that `prepare_run` resolved `last` to."""
    resolved = []

    def recording_prepare_run(args):
        resolved.append(original_prepare_run(args))
        return resolved[-1]

    original_prepare_run = run_ner.prepare_run
    monkeypatch.setattr(run_ner, "prepare_run", recording_prepare_run)
    run_ner.main(run_args(files, output_dir, *RESUME_LAST))
    return resolved[0]


def assert_same_weights(folder: Path, straight: Path) -> None:
    expected, found = load_file(straight / "model.safetensors"), load_file(folder / "model.safetensors")
    assert found.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], atol=1e-6, rtol=0)


def staging_of(output_dir: Path) -> Path:
    return output_dir.with_name(f".{output_dir.name}.staging")


def test_kill_in_a_training_step_resumes_from_the_last_checkpoint_to_the_uninterrupted_weights(
    tiny_files, straight_run, tmp_path, monkeypatch
):
    output_dir = tmp_path / "run"
    run_killed(tiny_files, output_dir, KILL_IN_TRAINING_STEP)
    assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoint-3", "checkpoint-6"]

    resumed_from = resume_last(tiny_files, output_dir, monkeypatch)
    assert Path(resumed_from) == output_dir / "checkpoint-6"  # in the middle of the second epoch
    assert_same_weights(output_dir, straight_run)
    assert sorted(path.name for path in output_dir.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]


@pytest.mark.parametrize(
    "patch, torn_files",
    [
        pytest.param(KILL_BEFORE_CHECKPOINT_RNG_STATE, {"optimizer.pt"}, id="before-rng-state"),
        pytest.param(KILL_IN_CHECKPOINT_TRAINER_STATE, {"rng_state.pth", "trainer_state.json"}, id="in-trainer-state"),
    ],
)
def test_kill_while_writing_a_checkpoint_resumes_from_the_complete_one_before_it(
    tiny_files, straight_run, tmp_path, monkeypatch, patch, torn_files
):
    output_dir = tmp_path / "run"
    run_killed(tiny_files, output_dir, patch)
    torn = output_dir / "checkpoint-6"
    assert {"config.json", "model.safetensors", *torn_files} <= {path.name for path in torn.iterdir()}
    assert checkpoint_problem(torn) is not None
    assert Path(get_last_checkpoint(str(output_dir))) == torn  # what transformers would resume from
    assert last_complete_checkpoint(output_dir) == output_dir / "checkpoint-3"

    resumed_from = resume_last(tiny_files, output_dir, monkeypatch)
    assert Path(resumed_from) == output_dir / "checkpoint-3"  # in the middle of the first epoch
    assert_same_weights(output_dir, straight_run)
    assert checkpoint_problem(output_dir / "checkpoint-6") is None  # written again, whole this time


def test_kill_before_the_final_exchange_leaves_the_folder_without_a_final_model_and_the_resume_finishes(
    tiny_files, straight_run, tmp_path, monkeypatch
):
    output_dir = tmp_path / "run"
    run_killed(tiny_files, output_dir, KILL_BEFORE_EXCHANGE)
    assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoint-6", "checkpoint-8"]
    staging = staging_of(output_dir)
    assert {"config.json", "model.safetensors", "all_results.json", "checkpoint-8"} <= set(os.listdir(staging))
    assert_same_weights(staging, straight_run)  # the new final model was whole, only not yet in place
    with pytest.raises((OSError, ValueError)):  # no config.json: transformers says it cannot tell the model type
        AutoModelForTokenClassification.from_pretrained(output_dir)

    resumed_from = resume_last(tiny_files, output_dir, monkeypatch)
    assert Path(resumed_from) == output_dir / "checkpoint-8"  # the end of training: nothing left to train
    assert_same_weights(output_dir, straight_run)
    assert not staging.exists()
    assert AutoModelForTokenClassification.from_pretrained(output_dir).num_labels == 5


def test_kill_while_writing_the_final_weights_keeps_the_previous_final_model_whole(
    tiny_files, straight_run, tmp_path, monkeypatch
):
    """A finished run saved again (resumed from its last checkpoint), killed with its new weights half written."""
    output_dir = tmp_path / "run"
    shutil.copytree(straight_run, output_dir)
    (output_dir / "notes.txt").write_text("a file of the folder as it was")
    before = {path.name: path.read_bytes() for path in output_dir.iterdir() if path.is_file()}

    run_killed(tiny_files, output_dir, KILL_IN_FINAL_WEIGHTS, *RESUME_LAST)
    assert {path.name: path.read_bytes() for path in output_dir.iterdir() if path.is_file()} == before
    model = AutoModelForTokenClassification.from_pretrained(output_dir)  # the old config with the old weights
    assert model.num_labels == 5
    half_written = staging_of(output_dir) / "model.safetensors"
    with pytest.raises(SafetensorError):
        safe_open(str(half_written), framework="pt")

    resumed_from = resume_last(tiny_files, output_dir, monkeypatch)  # past the leftover staging folder
    assert Path(resumed_from) == output_dir / "checkpoint-8"
    assert_same_weights(output_dir, straight_run)
    assert not staging_of(output_dir).exists()
    assert not (output_dir / "notes.txt").exists()  # the folder was replaced as a whole


def test_an_output_dir_holding_a_run_is_refused_and_overwrite_replaces_it_with_no_old_checkpoint_left(
    tiny_files, straight_run, tmp_path
):
    output_dir = tmp_path / "run"
    shutil.copytree(straight_run, output_dir)  # checkpoint-6 and checkpoint-8, higher than the new run's steps
    before = sorted(os.listdir(output_dir))
    # one step an epoch, evaluated and saved each epoch: checkpoint-1 … checkpoint-3, the best and the last kept
    new_run = ("--per_device_train_batch_size", "32", "--num_train_epochs", "3", "--do_predict", "false")

    with pytest.raises(ValueError, match="--overwrite_output_dir") as refused:
        run_ner.main(conll_args(tiny_files, output_dir, *new_run))
    assert "--resume_from_checkpoint last" in str(refused.value) and "checkpoint-8" in str(refused.value)
    assert sorted(os.listdir(output_dir)) == before

    run_ner.main(conll_args(tiny_files, output_dir, *new_run, "--overwrite_output_dir"))
    checkpoints = {path.name for path in output_dir.glob("checkpoint-*")}
    best = json.loads((output_dir / "checkpoint-3" / "trainer_state.json").read_text())["best_model_checkpoint"]
    assert checkpoints == {"checkpoint-3", Path(best).name}
    assert Path(best).parent == output_dir
    assert "eval_f1" in json.loads((output_dir / "all_results.json").read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="--fp16 is valid with a GPU")
def test_fp16_without_a_gpu_is_refused_naming_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--fp16"):
        run_ner.NerTrainingArguments(output_dir=str(tmp_path), fp16=True)
    with pytest.raises(ValueError, match="--fp16"):
        run_ner.main(["--output_dir", str(tmp_path / "run"), "--fp16"])
    assert not (tmp_path / "run").exists()


def write_checkpoint(folder: Path, step: int) -> Path:
    """A checkpoint as Trainer leaves it: weights first, trainer_state.json last."""
    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    save_file({"weight": torch.full((4, 4), float(step))}, str(checkpoint / "model.safetensors"))
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return checkpoint


def tear(checkpoint: Path, how: str) -> None:
    if how == "no-trainer-state":
        (checkpoint / "trainer_state.json").unlink()
    elif how == "cut-trainer-state":
        state = checkpoint / "trainer_state.json"
        state.write_text(state.read_text()[:10])
    elif how == "truncated-weights":
        weights = checkpoint / "model.safetensors"
        os.truncate(weights, weights.stat().st_size - 8)
    elif how == "no-weights":
        (checkpoint / "model.safetensors").unlink()


TEARS = ["no-trainer-state", "cut-trainer-state", "truncated-weights", "no-weights"]


@pytest.mark.parametrize("how", TEARS)
def test_last_complete_checkpoint_skips_a_torn_checkpoint(tmp_path, how):
    for step in (2, 9, 10):  # 10 sorts after 9 by number, not by name
        write_checkpoint(tmp_path, step)
    tear(tmp_path / "checkpoint-10", how)
    assert checkpoint_problem(tmp_path / "checkpoint-9") is None
    assert checkpoint_problem(tmp_path / "checkpoint-10") is not None
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-9"
    assert Path(get_last_checkpoint(str(tmp_path))).name == "checkpoint-10"  # by step number alone


def test_last_complete_checkpoint_is_none_without_a_complete_one(tmp_path):
    assert last_complete_checkpoint(tmp_path / "missing") is None
    tear(write_checkpoint(tmp_path, 5), "no-trainer-state")
    (tmp_path / "checkpoint-7").write_text("a file, not a folder")
    assert last_complete_checkpoint(tmp_path) is None
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        resolve_resume_checkpoint("last", tmp_path)


@pytest.mark.parametrize("how", TEARS)
def test_resolving_a_torn_checkpoint_folder_names_the_problem_and_the_newest_complete_one(tmp_path, how):
    write_checkpoint(tmp_path, 4)
    write_checkpoint(tmp_path, 8)
    tear(write_checkpoint(tmp_path, 12), how)
    problem = checkpoint_problem(tmp_path / "checkpoint-12")
    with pytest.raises(ValueError) as refused:
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-12"), tmp_path / "elsewhere")
    message = str(refused.value)
    assert problem in message and str(tmp_path / "checkpoint-8") in message


def test_resolving_last_a_run_folder_or_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    write_checkpoint(run, 4)
    tear(write_checkpoint(run, 8), "no-trainer-state")
    assert resolve_resume_checkpoint(None, run) is None
    assert resolve_resume_checkpoint("last", run) == str(run / "checkpoint-4")
    assert resolve_resume_checkpoint(str(run), tmp_path / "other") == str(run / "checkpoint-4")
    assert resolve_resume_checkpoint(str(run / "checkpoint-4"), run) == str(run / "checkpoint-4")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        resolve_resume_checkpoint("last", tmp_path / "missing")


def test_exchange_folders_swaps_two_folders_contents(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "inner").mkdir(parents=True)
    (first / "inner" / "a.txt").write_text("first")
    second.mkdir()
    (second / "b.txt").write_text("second")
    exchange_folders(first, second)
    assert sorted(os.listdir(first)) == ["b.txt"] and (first / "b.txt").read_text() == "second"
    assert sorted(os.listdir(second)) == ["inner"] and (second / "inner" / "a.txt").read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["first", "second"]


def test_exchange_folders_without_renameat2_swaps_with_renames(tmp_path, monkeypatch):
    class LibcWithoutRenameat2:
        def __init__(self, *args, **kwargs):
            pass

    monkeypatch.setattr(run_folders.ctypes, "CDLL", LibcWithoutRenameat2)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
        (folder / f"{folder.name}.txt").write_text(folder.name)
    exchange_folders(first, second)
    assert os.listdir(first) == ["second.txt"] and os.listdir(second) == ["first.txt"]
    assert sorted(os.listdir(tmp_path)) == ["first", "second"]


def test_staged_output_dir_swaps_in_the_final_save_with_the_checkpoints(tmp_path):
    output_dir = tmp_path / "run"
    write_checkpoint(output_dir, 3)
    (output_dir / "config.json").write_text("old")
    staging_of(output_dir).mkdir()
    (staging_of(output_dir) / "model.safetensors").write_text("a leftover of a killed save")
    with staged_output_dir(output_dir) as staging:
        assert staging == staging_of(Path(os.path.realpath(output_dir))) and not any(staging.iterdir())
        (staging / "config.json").write_text("new")
        assert (output_dir / "config.json").read_text() == "old"
    assert sorted(os.listdir(output_dir)) == ["checkpoint-3", "config.json"]
    assert (output_dir / "config.json").read_text() == "new"
    assert checkpoint_problem(output_dir / "checkpoint-3") is None
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_staged_output_dir_leaves_the_folder_as_it_was_when_the_save_fails(tmp_path):
    output_dir = tmp_path / "run"
    write_checkpoint(output_dir, 3)
    (output_dir / "config.json").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), staged_output_dir(output_dir) as staging:
        (staging / "config.json").write_text("new")
        raise RuntimeError("disk full")
    assert sorted(os.listdir(output_dir)) == ["checkpoint-3", "config.json"]
    assert (output_dir / "config.json").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_staged_output_dir_creates_a_missing_output_dir(tmp_path):
    output_dir = tmp_path / "runs" / "first"
    with staged_output_dir(output_dir) as staging:
        (staging / "config.json").write_text("new")
    assert os.listdir(output_dir) == ["config.json"]
    assert sorted(os.listdir(output_dir.parent)) == ["first"]


def test_staged_output_dir_carries_over_subfolders_written_during_the_run(tmp_path):
    """TensorBoard writes `runs/` into the output folder (`--report_to tensorboard`): the swap must keep it."""
    output_dir = tmp_path / "run"
    (output_dir / "runs" / "Jan01_host").mkdir(parents=True)
    (output_dir / "runs" / "Jan01_host" / "events.out.tfevents").write_text("scalars")
    (tmp_path / "elsewhere").mkdir()
    (output_dir / "linked").symlink_to(tmp_path / "elsewhere")
    (output_dir / "old_predictions.conll").write_text("of an earlier final save")
    with staged_output_dir(output_dir) as staging:
        (staging / "config.json").write_text("new")
    assert sorted(os.listdir(output_dir)) == ["config.json", "linked", "runs"]
    assert (output_dir / "runs" / "Jan01_host" / "events.out.tfevents").read_text() == "scalars"
    assert (output_dir / "linked").resolve() == (tmp_path / "elsewhere").resolve()


def test_staged_output_dir_through_a_symlink_saves_into_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "scratch" / "run"
    write_checkpoint(target, 3)
    (tmp_path / "home").mkdir()
    link = tmp_path / "home" / "run"
    link.symlink_to(target)
    with staged_output_dir(link) as staging:
        assert staging.parent == target.parent.resolve()
        (staging / "config.json").write_text("new")
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert sorted(os.listdir(target)) == ["checkpoint-3", "config.json"]
    assert os.listdir(tmp_path / "home") == ["run"] and os.listdir(tmp_path / "scratch") == ["run"]


def test_overwrite_removes_the_old_runs_subfolders_and_keeps_its_final_model_until_the_swap(tmp_path):
    output_dir = tmp_path / "run"
    write_checkpoint(output_dir, 16)
    (output_dir / "runs").mkdir()
    (output_dir / "config.json").write_text("old")
    prepare_output_dir(output_dir, overwrite=True, resuming=False, is_main_process=True)
    assert os.listdir(output_dir) == ["config.json"]


def test_resuming_another_folders_checkpoint_into_a_folder_holding_a_run_is_refused(tmp_path):
    write_checkpoint(tmp_path / "first", 4)
    write_checkpoint(tmp_path / "second", 100)
    other_checkpoint = str(tmp_path / "first" / "checkpoint-4")

    def arguments(output_dir: Path) -> run_ner.NerTrainingArguments:
        return run_ner.NerTrainingArguments(output_dir=str(output_dir), resume_from_checkpoint=other_checkpoint)

    with pytest.raises(ValueError, match="already holds a run"):  # its `last` would then resume checkpoint-100
        prepare_run(arguments(tmp_path / "second"))
    assert prepare_run(arguments(tmp_path / "fresh")) == other_checkpoint
    assert prepare_run(arguments(tmp_path / "first")) == other_checkpoint
    continued = run_ner.NerTrainingArguments(output_dir=str(tmp_path / "second"), resume_from_checkpoint="last")
    assert prepare_run(continued) == str(tmp_path / "second" / "checkpoint-100")
