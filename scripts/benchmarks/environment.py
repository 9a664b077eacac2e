"""What a page says about how its numbers were made: the command, the date, the machine, the threads, the clock and
the versions, read at run time."""

import argparse
import os
import platform
import shlex
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import LAUNCH_ENVIRONMENT
from .common import REPO_ROOT

RUN_SCRIPT = Path(__file__).resolve().with_name("run.py")
BASE_PACKAGES = ("torch", "transformers", "hf_birnn")
# Environment variables that change CPU kernels, threads or the allocator, so that the command reproduces the run
TUNING_VARIABLES = ("LD_PRELOAD", "ATEN_CPU_CAPABILITY")
TUNING_PREFIXES = ("OMP_", "MKL_", "KMP_", "DNNL_", "ONEDNN_", "MALLOC_")
# CPU flags that decide which kernels oneDNN and ONNX Runtime pick (the int8 ones above all)
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8")


@dataclass(frozen=True)
class RunInfo:
    """The facts shared by every page of one run."""

    command: str
    working_dir: str  # "the repository root", or the folder the command ran in
    date: str
    cpu: str
    cores: str
    system: str
    threads: int
    clock: str
    repeats: int
    quick: bool
    commit: str | None


def describe_run(args: argparse.Namespace, argv: list[str]) -> RunInfo:
    return RunInfo(
        command=command_line(argv),
        working_dir=_working_dir(),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu_description(),
        cores=core_count(),
        system=platform.platform(),
        threads=args.threads,
        clock=args.clock,
        repeats=args.repeats,
        quick=args.quick,
        commit=git_commit(),
    )


def command_line(argv: list[str]) -> str:
    """The command as typed: the tuning variables set, `python`, the entry script as seen from here, the flags."""
    variables = [
        f"{name}={shlex.quote(value)}"
        for name, value in sorted(LAUNCH_ENVIRONMENT.items())
        if name in TUNING_VARIABLES or name.startswith(TUNING_PREFIXES)
    ]
    return " ".join([*variables, shlex.join(["python", _relative(RUN_SCRIPT), *argv])])


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _working_dir() -> str:
    cwd = Path.cwd().resolve()
    return "the repository root" if cwd == REPO_ROOT else f"`{cwd}`"


def cpu_description() -> str:
    """The CPU's model name and the kernel-relevant flags it has (Linux), else what `platform` knows."""
    model, flags = _cpuinfo()
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    present = [flag for flag in KERNEL_FLAGS if flag in flags]
    return f"{model} ({', '.join(present)})" if present else model


def _cpuinfo() -> tuple[str | None, set[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo; (None, empty) where there is none."""
    model, flags = None, set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def core_count() -> str:
    """Logical cores, and how many this process may use where that is fewer."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return f"{cores} cores" if usable == cores else f"{cores} cores ({usable} usable by the run)"


def package_versions(extra: tuple[str, ...]) -> dict[str, str]:
    """python's version and those of the base packages and of `extra`, in that order."""
    versions = {"python": platform.python_version()}
    for name in (*BASE_PACKAGES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    """HEAD of the repository at run time (read only), None outside a git checkout."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip() or None
