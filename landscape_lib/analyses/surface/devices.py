"""One loss surface on several devices: the grid's rows are shared out among the GPUs.

Each device holds its own copy of the model, the centre, the two directions and the batches;
one thread per device takes the next block of rows from a shared queue and evaluates it with
the library's own ``evaluate_points``, so every engine, precision, memory plan and BatchNorm
mode behaves as on one device and each point gets the same numbers. The caller's thread
collects the blocks and hands rows to ``on_row`` strictly in order (row 0, 1, 2 ...), so a
store that appends rows as they come sees what the one-device surface writes, and
``start_row`` resumes as before.

Threads, not processes: CUDA kernels run asynchronously and PyTorch releases the GIL inside its
operators, so one thread per GPU keeps each busy as long as the Python work per point
(launching its kernels) is small beside the GPU work per point (a ResNet-18 forward over 1,024
images); processes would pay a start-up (import, CUDA context, cuDNN autotuning) of several
seconds per surface, about as long as a whole 41x41 ResNet-18 surface on one GPU.
Measured on 2 H200s (41x41 ResNet-18, 1,024 images): threads 1.71-1.78x over one GPU at 82-92 %
utilisation, two processes 1.94-1.96x once started: the threads still lose some time to the GIL.
Replaying each point as a CUDA graph was tried; its capture inside these threads was invalidated
(cudaErrorStreamCaptureInvalidated) even one capture at a time, and so was a capture of each
device's point by the caller's thread before the workers started, so it is not used. Two ways
of making fewer Python calls per point changed neither figure and are not used either: joining
the loop engine's batches (one forward of 1,024 images per point instead of two of 512: 1 GPU
13.45 s, 2 GPUs 1.72x at 86 % each) and writing a point's weights with one ``addmv`` into a
flat buffer that the parameters view (instead of 62 copies: 13.57 s, 1.74x, 86 % each).
``bench/bench_surface_gpus.py`` measures both. Blocks shrink as the grid empties ("guided":
the rows left / (2 x devices), at least one), so the devices finish together.

    res = surface_2d_multi(model, center, d1, d2, xs, ys, batches, devices=["cuda:0", "cuda:1"])
"""
from __future__ import annotations

import copy
import math
import queue
import threading
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...errors import ConfigError, check_choice
from .directions import to_flat
from .evaluate import RowCallback, evaluate_points
from .grids import SURFACE_BN_MODES, surface_2d


def row_blocks(first: int, last: int, workers: int) -> list[tuple[int, int]]:
    """Guided blocks [a, b) covering rows first..last-1: each is the rows left divided by
    2 x workers (at least one), so the last blocks are small and no device waits long."""
    blocks, a = [], first
    while a < last:
        size = max(1, math.ceil((last - a) / (2 * workers)))
        blocks.append((a, min(last, a + size)))
        a += size
    return blocks


def _same(model: nn.Module, device: torch.device) -> bool:
    own = next(model.parameters()).device
    return own.type == device.type and (own.index or 0) == (device.index or 0)


class _Replica:
    """The model and every tensor a device needs, copied there once."""

    def __init__(self, model, device, base, D, batches, bn_batches, *, own: bool):
        self.device = torch.device(device)
        # `own`: this device evaluates on the caller's model itself (left as found, as in
        # surface_2d); every other device on a copy, so no two threads share a module.
        self.model = model if own else copy.deepcopy(model).to(self.device)
        self.base, self.D = base.to(self.device), D.to(self.device)
        self.batches, self.bn_batches = self._move(batches), self._move(bn_batches)

    def _move(self, batches):
        if batches is None:
            return None
        return [(x.to(self.device), y.to(self.device)) for x, y in batches]


def surface_2d_multi(model: nn.Module, center, d1, d2, xs, ys, batches, *,
                     devices: Sequence | None = None, bn: str = "fixed", bn_batches=None,
                     precision: str = "fp32", method: str = "auto",
                     points_per_chunk: int | None = None, channels_last: bool = False,
                     compile: bool = False, on_row: RowCallback | None = None,
                     start_row: int = 0, progress: bool = False) -> dict:
    """``surface_2d`` with the rows shared among ``devices`` (default: the model's device).

    Same arguments and result as ``surface_2d``, plus ``devices`` (the list used) in the result.
    With one device this is ``surface_2d`` itself.
    """
    check_choice("bn", bn, SURFACE_BN_MODES)
    devices = [torch.device(d) for d in (devices or [next(model.parameters()).device])]
    options = dict(bn=bn, precision=precision, method=method, points_per_chunk=points_per_chunk,
                   channels_last=channels_last, compile=compile)
    if len(devices) == 1:
        res = surface_2d(model, center, d1, d2, xs, ys, batches, bn_batches=bn_batches,
                         on_row=on_row, start_row=start_row, progress=progress, **options)
        return {**res, "devices": [str(devices[0])]}
    if compile:
        raise ConfigError("compile=True is not supported on several devices "
                          "(torch.compile from several threads at once)")
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = np.asarray(ys, dtype=np.float64).reshape(-1)
    nx, ny = len(xs), len(ys)
    if not 0 <= int(start_row) <= ny:
        raise ConfigError(f"start_row={start_row!r} must lie in [0, {ny}] for {ny} rows")
    loss, acc = np.full((ny, nx), np.nan), np.full((ny, nx), np.nan)
    result = dict(xs=xs, ys=ys, bn=bn, precision=precision, method=None, points_per_chunk=None,
                  devices=[str(d) for d in devices])
    blocks = row_blocks(int(start_row), ny, len(devices))
    if not blocks:
        return {**result, "loss": loss, "acc": acc}
    base = to_flat(center, model)
    D = torch.stack([to_flat(d1, model), to_flat(d2, model)])
    home = next((i for i, d in enumerate(devices) if _same(model, d)), None)
    replicas = [_Replica(model, d, base, D, batches, bn_batches, own=i == home)
                for i, d in enumerate(devices)]

    todo: queue.Queue = queue.Queue()
    for block in blocks:
        todo.put(block)
    done: queue.Queue = queue.Queue()
    stop = threading.Event()
    threads = [threading.Thread(target=_work, args=(r, xs, ys, todo, done, stop, options),
                                name=f"surface-{r.device}", daemon=True) for r in replicas]
    for t in threads:
        t.start()
    bar = tqdm(total=ny - int(start_row), desc=f"surface ({len(devices)} devices)",
               unit="row", disable=not progress)
    filled = np.zeros(ny, dtype=bool)  # not a NaN test: a diverged point is a NaN loss
    emitted, received = int(start_row), 0
    try:
        while received < len(blocks):
            item = done.get()
            received += 1
            if isinstance(item, BaseException):
                raise item
            (a, b), block_loss, block_acc, info = item
            loss[a:b], acc[a:b], filled[a:b] = block_loss, block_acc, True
            result.update(method=info["method"], points_per_chunk=info["points_per_chunk"])
            bar.update(b - a)
            while emitted < ny and filled[emitted]:
                if on_row is not None:  # rows leave in order, whichever device finished first
                    on_row(emitted, loss[emitted].copy(), acc[emitted].copy())
                emitted += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
        bar.close()
    return {**result, "loss": loss, "acc": acc}


def _work(rep: _Replica, xs, ys, todo: queue.Queue, done: queue.Queue, stop: threading.Event,
          options: dict) -> None:
    """One device's loop: evaluate blocks of rows until none is left (or another failed)."""
    try:
        if rep.device.type == "cuda":
            torch.cuda.set_device(rep.device)
        while not stop.is_set():
            try:
                a, b = todo.get_nowait()
            except queue.Empty:
                return
            gx, gy = np.meshgrid(xs, ys[a:b])
            coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
            nx = len(xs)
            block_loss, block_acc = np.empty((b - a) * nx), np.empty((b - a) * nx)
            info = {}
            for start, loss, acc, info in evaluate_points(  # noqa: B007 (info: the last chunk's)
                    rep.model, rep.base, rep.D, coords, rep.batches, bn_batches=rep.bn_batches,
                    progress=False, **options):
                block_loss[start:start + len(loss)], block_acc[start:start + len(acc)] = loss, acc
            done.put(((a, b), block_loss.reshape(b - a, nx), block_acc.reshape(b - a, nx), info))
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
        stop.set()
        done.put(exc)
