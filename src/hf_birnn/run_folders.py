"""The output folder of a training run: never two runs mixed in one folder, never a half-written checkpoint resumed,
never a half-written final save.

- A folder that holds a previous run is refused unless the run is resumed from one of its checkpoints
  (`--resume_from_checkpoint`) or replaced (`--overwrite_output_dir`, which first removes the old run's subfolders:
  its checkpoints, so that checkpoint rotation cannot delete the new run's best one in favour of the old run's, and
  its logs, such as TensorBoard's `runs/`).
- Trainer writes a checkpoint file by file and its `get_last_checkpoint` picks the highest step number, so a kill
  during a checkpoint write would resume from a torn folder. `last_complete_checkpoint` takes the newest one whose
  `trainer_state.json` (written last) and weights read back.
- The final save (weights, config, tokenizer, card, plots, metrics) is written to a staging folder beside the output
  folder, which then takes the output folder's place in one atomic `renameat2(RENAME_EXCHANGE)`: a kill leaves the
  old folder or the new one, never a new config beside old weights. The output folder's subfolders (checkpoints,
  TensorBoard's `runs/`) carry over; its top-level files are the final save's and are replaced as a whole. A
  symlinked output folder is swapped at its target, beside which the staging folder is made.
"""

import ctypes
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError, safe_open

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
RESUME_LAST = "last"


def checkpoints_in(folder: str | Path) -> list[Path]:
    """The `checkpoint-N` folders of `folder`, newest (highest N) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and CHECKPOINT_PATTERN.match(path.name)]
    return sorted(found, key=lambda path: int(CHECKPOINT_PATTERN.match(path.name).group(1)), reverse=True)


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (None when it can): its trainer state, written last, is missing or
    cut, or its weights do not read."""
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text())
    except FileNotFoundError:
        return f"it has no {TRAINER_STATE} (the write was cut short)"
    except json.JSONDecodeError:
        return f"its {TRAINER_STATE} is cut short"
    weights = sorted(checkpoint.glob("*.safetensors"))
    if not weights:
        return "it holds no safetensors weights"
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as error:
            return f"{path.name} does not read ({error})"
    return None


def last_complete_checkpoint(folder: str | Path) -> Path | None:
    return next((path for path in checkpoints_in(folder) if checkpoint_problem(path) is None), None)


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str | Path) -> str | None:
    """`--resume_from_checkpoint`: `last` (the newest complete checkpoint of `output_dir`), a run folder (its newest
    complete checkpoint), or one checkpoint folder, which must be complete."""
    if resume_from_checkpoint is None:
        return None
    requested = Path(output_dir if resume_from_checkpoint == RESUME_LAST else resume_from_checkpoint)
    if not requested.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: {requested} is not a folder.")
    if CHECKPOINT_PATTERN.match(requested.name):
        problem = checkpoint_problem(requested)
        if problem is None:
            return str(requested)
        fallback = last_complete_checkpoint(requested.parent)
        hint = f"; the newest complete one is {fallback}" if fallback else ""
        raise ValueError(f"Cannot resume from {requested}: {problem}{hint}.")
    checkpoint = last_complete_checkpoint(requested)
    if checkpoint is None:
        raise ValueError(f"--resume_from_checkpoint: {requested} holds no complete checkpoint-N folder.")
    return str(checkpoint)


def prepare_output_dir(output_dir: str | Path, overwrite: bool, resuming: bool, is_main_process: bool) -> None:
    """Refuse a folder that holds a previous run, unless it is resumed or replaced (see the module docstring)."""
    output_dir = Path(output_dir)
    if resuming or not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        newest = last_complete_checkpoint(output_dir)
        resume_hint = f"--resume_from_checkpoint {RESUME_LAST}"
        if newest is not None:
            resume_hint += f" (its newest complete checkpoint: {newest.name})"
        raise ValueError(
            f"--output_dir {output_dir} already holds a run ({len(list(output_dir.iterdir()))} entries). Pass "
            f"--overwrite_output_dir to replace it, or {resume_hint} to continue it, or choose another folder."
        )
    if is_main_process:
        for entry in subfolders_of(output_dir):
            if entry.is_symlink():
                entry.unlink()
            else:
                shutil.rmtree(entry)


def subfolders_of(folder: Path) -> list[Path]:
    """The subfolders of `folder` (checkpoints, logs), symlinks to folders included."""
    return [entry for entry in folder.iterdir() if entry.is_dir()]


def exchange_folders(first: Path, second: Path) -> None:
    """Swap two folders' names in one step (Linux `renameat2(RENAME_EXCHANGE)`); where the call is missing, two
    renames, with a moment in between where `second` is absent."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_current_folder, rename_exchange = -100, 2
        paths = (at_current_folder, os.fsencode(first), at_current_folder, os.fsencode(second))
        if renameat2(*paths, rename_exchange) == 0:
            return
    parked = second.with_name(second.name + ".old")
    os.replace(second, parked)
    os.replace(first, second)
    os.replace(parked, first)


@contextmanager
def staged_output_dir(output_dir: str | Path, is_main_process: bool = True) -> Iterator[Path]:
    """Yields a staging folder for the final save; when the block ends without error, the staging folder gets the
    output folder's subfolders (checkpoints, logs; hard links: no copy) and takes its place in one step, and the old
    folder goes. Other processes (DDP) get the same path and write nothing there themselves."""
    output_dir = Path(os.path.realpath(output_dir))  # a symlink's target, whose parent holds the staging folder
    staging = output_dir.with_name(f".{output_dir.name}.staging")
    if is_main_process:
        if staging.is_symlink():
            staging.unlink()
        shutil.rmtree(staging, ignore_errors=True)  # a leftover of a run killed while saving
        staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        if is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if not is_main_process:
        return
    for entry in subfolders_of(output_dir) if output_dir.is_dir() else []:
        if (staging / entry.name).exists():
            continue  # the final save wrote its own
        if entry.is_symlink():
            os.symlink(os.readlink(entry), staging / entry.name)
        else:
            shutil.copytree(entry, staging / entry.name, symlinks=True, copy_function=os.link)
    if output_dir.exists():
        exchange_folders(staging, output_dir)
        shutil.rmtree(staging)
    else:
        os.replace(staging, output_dir)
