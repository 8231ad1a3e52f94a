"""Where a process computes: its device, its rank among torchrun / SLURM processes, and the
torch threads and DataLoader workers that fit its cores. One home for what every command that
computes (training, pseudo masks, inference) decides before it starts.

Threads: two torch threads on two cores that DataLoader workers (or any other job) also want
collapse: OpenMP threads spin waiting for each other, and a forward pass ran 14x slower. So every
command that computes sets its threads once from :func:`plan_threads`; ``num_workers`` /
``threads`` given in a config override either half.

>>> plan_threads(None, None, cores=2)
(0, 2)
>>> plan_threads(None, None, cores=16, gpu=True)
(8, 8)
>>> plan_threads(2, None, cores=2)        # workers given: threads take what is left, at least one
(2, 1)
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

# At most this many DataLoader workers feed a GPU by default: tile decoding rarely needs more.
GPU_WORKERS = 8


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, as set by taskset, cgroups or
    SLURM), shared among the processes of a node started by torchrun / SLURM."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE") or "1"
    try:
        return max(1, cores // max(1, int(local)))
    except ValueError:
        return max(1, cores)


def plan_threads(
    num_workers: int | None, threads: int | None, cores: int | None = None, gpu: bool = False
) -> tuple[int, int]:
    """``(workers, threads)`` for a process with ``cores`` cores (default: :func:`usable_cores`).

    On a CPU the model is the work: no workers, every core a torch thread (a demo stage-2 epoch
    on 2 cores took 24.7 s so, and 25.3 s with two workers beside two threads: README's speed
    table). Feeding a GPU, workers decode while the GPU computes: up to :data:`GPU_WORKERS`,
    leaving one core to the main process. A value given is kept; the other half takes the cores
    that are left, at least one thread.
    """
    cores = cores or usable_cores()
    if num_workers is None:
        num_workers = min(GPU_WORKERS, cores - 1) if gpu else 0
    if threads is None:
        threads = max(1, cores - num_workers)
    return num_workers, threads


def fit_threads(num_workers: int | None, threads: int | None, gpu: bool = False) -> int:
    """Set torch's intra-op threads by :func:`plan_threads`; returns the DataLoader workers.

    Without ``threads``, a positive ``OMP_NUM_THREADS`` in the environment is the thread count
    (the override for commands without a config: ``predict``, ``evaluate``).
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    if threads is None and env.isdigit() and int(env) > 0:
        threads = int(env)
    workers, n = plan_threads(num_workers, threads, gpu=gpu)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("threads: %d torch threads, %d DataLoader workers (%d cores usable)", n, workers, usable_cores())
    return workers


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size when run under torchrun / SLURM with a process
    group (initialised here with gloo when the launcher set the environment but nobody did)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` when given, else the GPU when there is one (under torchrun / SLURM the one of
    this process's local rank, so that processes do not share GPU 0), else the CPU."""
    if device is not None:
        return torch.device(device)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
    return torch.device(f"cuda:{int(local) % torch.cuda.device_count()}" if local else "cuda")
