"""Starting, reaching and stopping the Dask cluster that ``--scheduler`` names.

``local:N`` and ``local-cuda`` clusters belong to the command: they bind to 127.0.0.1,
start with it and are closed (their worker processes ended) when it stops, Ctrl-C
included. An address is someone else's cluster: the command only connects, within
:data:`CONNECT_TIMEOUT_S` seconds, and leaves it running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench.distributed.spec import SchedulerSpec
from bench.errors import UsageError

#: Seconds to reach an existing scheduler before giving up with a one-line error.
CONNECT_TIMEOUT_S = 4
#: The resource a CUDA worker advertises and each cell or trial asks for, so two never
#: share a GPU (``dask worker ... --resources GPU=1``).
GPU = "GPU"


class SchedulerError(UsageError):
    """The cluster cannot be started or reached (one line, exit status 2)."""


@dataclass
class Cluster:
    """A connected client and what the tasks need to know about its workers."""

    client: Any  # distributed.Client
    spec: SchedulerSpec
    gpu: bool  # each task asks for GPU=1
    threads: int | None  # torch threads per worker process (None: torch's default)

    def resources(self) -> dict[str, float] | None:
        return {GPU: 1} if self.gpu else None

    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))


@contextlib.contextmanager
def _children_ignore_ctrl_c() -> Iterator[None]:
    """Start processes that ignore SIGINT (Python keeps an inherited SIG_IGN).

    A Ctrl-C in a terminal reaches the whole process group, the cluster's processes
    too; they must not die with a traceback each but stay until the driver, which got
    the same Ctrl-C, has collected what the running cells return and closes them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: Dask settings for the clusters this project starts. Dask's nanny gives every worker
#: ``MALLOC_TRIM_THRESHOLD_=65536`` (to hand freed memory back to the OS at once); setting
#: it also switches off glibc's adaptive mmap threshold, so each activation buffer of a
#: training step is a fresh ``mmap`` with page faults and its free a ``munmap``. Measured
#: on the 2-core test machine (quick suite, SGD-family cells, two workers): 32 ms per
#: step with it, about 19 without, which is what two plain processes side by side get.
#: Training frees and reallocates the same sizes every step, so nothing accumulates.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
#: ``dask.config.set`` contexts restore what they saw on entry, so two that overlap in two
#: threads (two drivers in one process) could leave the setting changed for good; cluster
#: starts take turns instead. A nanny reads its settings while the cluster starts.
_CONFIG_TURN = threading.Lock()


def _local_cluster(spec: SchedulerSpec) -> Any:
    import dask
    from distributed import LocalCluster

    with _CONFIG_TURN, _children_ignore_ctrl_c(), dask.config.set(WORKER_CONFIG):
        return LocalCluster(
            n_workers=spec.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


def _cuda_cluster() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise SchedulerError(
            "--scheduler local-cuda needs a CUDA device, and torch sees none; use local:N "
            "on this machine"
        )
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise SchedulerError(
            "--scheduler local-cuda needs dask-cuda: pip install -e '.[cuda]'"
        ) from None
    import dask

    with _CONFIG_TURN, _children_ignore_ctrl_c(), dask.config.set(WORKER_CONFIG):
        return LocalCUDACluster(
            host="127.0.0.1",
            threads_per_worker=1,
            resources={GPU: 1},
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )


def _connect(address: str) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SchedulerError(
            f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S} s "
            f"({reason}); start one with `dask scheduler` and workers with `dask worker "
            f"{address} --nthreads 1`, or use --scheduler local:N"
        ) from None


def trimming_workers(client: Any) -> dict[str, str]:
    """Workers whose environment sets ``MALLOC_TRIM_THRESHOLD_`` (see :data:`WORKER_CONFIG`)."""
    answers = client.run(_malloc_trim_threshold)
    return {worker: value for worker, value in answers.items() if value is not None}


def _malloc_trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


@contextlib.contextmanager
def open_cluster(spec: SchedulerSpec) -> Iterator[Cluster]:
    """The cluster of ``spec``, connected; a cluster started here is closed on exit."""
    from distributed import Client

    stack = contextlib.ExitStack()
    with stack:
        if spec.kind == "address":
            client = stack.enter_context(_connect(spec.address or ""))
            info = client.scheduler_info(n_workers=-1).get("workers", {})
            gpu = bool(info) and all(GPU in w.get("resources", {}) for w in info.values())
            threads = None
            if not gpu and (slow := trimming_workers(client)):
                print(
                    f"note: {len(slow)} worker(s) of {spec.address} run with "
                    f"MALLOC_TRIM_THRESHOLD_={next(iter(slow.values()))} (Dask's default), "
                    "which can halve the speed of CPU training; start them with the Dask "
                    "setting distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_ = "
                    "null (README, Scaling out)",
                    file=sys.stderr,
                )
        else:
            local = stack.enter_context(
                _cuda_cluster() if spec.kind == "local-cuda" else _local_cluster(spec)
            )
            client = stack.enter_context(Client(local))
            gpu = spec.kind == "local-cuda"
            workers = spec.workers or len(local.workers) or 1
            threads = None if gpu else max(1, (os.cpu_count() or 1) // workers)
        yield Cluster(client=client, spec=spec, gpu=gpu, threads=threads)
