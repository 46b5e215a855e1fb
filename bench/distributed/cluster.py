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


def _local_cluster(spec: SchedulerSpec) -> Any:
    from distributed import LocalCluster

    with _children_ignore_ctrl_c():
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
    with _children_ignore_ctrl_c():
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
        else:
            local = stack.enter_context(
                _cuda_cluster() if spec.kind == "local-cuda" else _local_cluster(spec)
            )
            client = stack.enter_context(Client(local))
            gpu = spec.kind == "local-cuda"
            workers = spec.workers or len(local.workers) or 1
            threads = None if gpu else max(1, (os.cpu_count() or 1) // workers)
        yield Cluster(client=client, spec=spec, gpu=gpu, threads=threads)
