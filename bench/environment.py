"""Where a run happens: the device, versions and code identity recorded with every cell.

The code version is :func:`bench.ledger.import_closure.code_version`: the hash of the training
code's import closure.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import cache
from pathlib import Path

import torch

from bench.ledger.import_closure import REPOSITORY_ROOT, code_version

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is an error."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was requested but torch sees no CUDA device; use cpu or auto"
        )
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """The card, or the processor's model name and the threads torch uses on it.

    Linux's ``platform.processor()`` is usually empty or just the architecture, so the
    CPU's name comes from ``/proc/cpuinfo`` where there is one.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_processor_name()} ({torch.get_num_threads()} threads)"


@cache
def _processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


@cache
def git_commit() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def environment(device: torch.device) -> dict[str, str]:
    return {
        "device": device.type,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "code_version": code_version(),
    }
