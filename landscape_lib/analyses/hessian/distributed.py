"""One Hessian over data shards held by several processes (one per GPU; gloo on the CPU).

Design: **lockstep**. Every rank runs the same analysis code (same seeds, same Lanczos driver)
on its own ``ShardedOperator``; only the product is collective:

    H V = sum_r (n_r / N) H_r V          (H_r: the mean-loss Hessian of rank r's n_r samples)

``ShardedOperator @ V`` broadcasts V from rank 0 (rounding differences can never make the
drivers drift apart), multiplies it by the local ``HessianOperator`` (which weights its own
batches), scales by n_r / N and all-reduces (sum). Every rank holds the identical result and
takes the identical decisions (stopping rules, restarts); rank 0 writes the rows. A failure on
one rank becomes a collective error on all, and ``launch`` re-raises it in the caller.

Per product: one broadcast and one all-reduce of P x m floats (ResNet-18: 45 MB per column,
well under a millisecond over NVLink against tens of milliseconds of compute).

``launch(fn, world, backend, args)`` starts one fresh process per rank
(``torch.multiprocessing.spawn``) so that the CLI stays one command; under torchrun or Slurm
the ranks exist already and ``init_from_env`` joins them instead. ``shard`` cuts the batch
list so that the union of all ranks' batches is exactly the one-process list.
"""
from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from ...errors import LandscapeError

TIMEOUT = timedelta(minutes=30)  # a collective waiting longer than this fails every rank


class ShardedOperator:
    """The mean-loss Hessian over all ranks' samples, from each rank's local operator."""

    def __init__(self, local_op, group=None):
        self.local, self.group = local_op, group
        self.shape, self.dtype, self.device = local_op.shape, local_op.dtype, local_op.device
        self.param_names = local_op.param_names
        n = torch.tensor([float(local_op.n_samples)], dtype=torch.float64,
                         device=self._comm_device())
        dist.all_reduce(n, group=group)
        self.n_samples = int(n.item())
        self.weight = local_op.n_samples / self.n_samples
        self._columns = 0

    @property
    def mode(self) -> str:
        return self.local.mode

    @property
    def n_products(self) -> int:
        """Columns multiplied, plus the local operator's trial products (``"auto"``)."""
        return self._columns + int(getattr(self.local, "trial_products", 0))

    def _comm_device(self):
        return self.local.device if dist.get_backend(self.group) == "nccl" else "cpu"

    def __matmul__(self, v: Tensor) -> Tensor:
        V = v.reshape(self.shape[0], -1).to(self._comm_device(), self.dtype).contiguous()
        dist.broadcast(V, src=0, group=self.group)
        out = (self.local @ V.to(self.device)) * self.weight
        out = out.to(self._comm_device()).contiguous()
        dist.all_reduce(out, group=self.group)
        self._columns += V.shape[1]
        out = out.to(self.device)
        return out[:, 0] if v.ndim == 1 else out


def shard(n: int, rank: int, world: int) -> slice:
    """Contiguous, balanced slice of n items for ``rank`` (sizes differ by at most one)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def rank_device(rank: int, backend: str) -> torch.device:
    return torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")


def _entry(rank: int, fn: Callable, world: int, backend: str, init: str, args: tuple, errors):
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world,
                            timeout=TIMEOUT)
    try:
        fn(rank, world, *args)
    except LandscapeError as exc:  # a user's error (bad input): the caller raises it as it is
        errors.put(exc)
        raise
    finally:
        dist.destroy_process_group()


def launch(fn: Callable, world: int, backend: str | None = None, args: tuple = ()) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` fresh processes joined in a process group
    (NCCL when CUDA is there, gloo otherwise). An exception on any rank stops the others (even
    those waiting in a collective) and is re-raised here: a ``LandscapeError`` as itself, any
    other as torch's ``ProcessRaisedException`` with the rank's traceback."""
    backend = backend or default_backend()
    errors = mp.get_context("spawn").SimpleQueue()
    # The ranks meet in a file of their own (torch's FileStore), not on a TCP port: a free
    # port found here could be taken by another process before the ranks bind it (two
    # analyses started at once, a dashboard, a test beside them).
    with tempfile.TemporaryDirectory(prefix="landscape-ranks-") as folder:
        init = (Path(folder) / "rendezvous").as_uri()
        try:
            mp.spawn(_entry, args=(fn, world, backend, init, args, errors), nprocs=world,
                     join=True)
        except mp.ProcessRaisedException:
            if not errors.empty():
                raise errors.get() from None
            raise


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set): join the group, return (rank, world)."""
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=TIMEOUT)
    return dist.get_rank(), dist.get_world_size()
