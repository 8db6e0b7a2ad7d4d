"""The loop engine's work for one point, captured once as a CUDA graph and replayed per point.

For a net that takes the loop engine (convolutions, attention) with fixed BatchNorm statistics,
one point costs a few hundred small Python calls: the weights written parameter by parameter,
then every module of the forward on every batch. On a GPU those calls are the CPU's share of a
point, and with one thread per GPU (``devices.surface_2d_multi``) the threads queue for Python's
global lock on them. ``GraphedPoint`` records the whole point once, ``w = base + D^T c`` written
into the parameters, every batch's forward, the loss and hit sums, as a CUDA graph reading the
point's coordinates from one static tensor; a point is then one copy and one replay.

The graph replays the very kernels of the eager loop on the same tensors (the parameters are
written in place, as the loop does), so the numbers equal the loop's (``tests/test_gpu.py``).
Capture needs a CUDA device, shapes that do not change and no host synchronisation in the
forward; ``evaluate_points`` falls back to the eager loop, with a warning, if capture fails.
"""
from __future__ import annotations

import threading
from typing import Callable

import torch
from torch import Tensor

# One capture at a time in this process: entering ``torch.cuda.graph`` synchronises and empties
# the allocator's cache (a cudaFree on every GPU), which invalidates a capture running in another
# thread on another GPU (2 H200s, one thread per GPU: cudaErrorStreamCaptureInvalidated).
# Replays and eager work on other GPUs may go on meanwhile.
_CAPTURE = threading.Lock()


class GraphedPoint:
    """``point(c) -> (loss sum, hits)`` for one coordinate vector ``c`` (on the device).

    ``body(coord, loss, hits)`` is the eager work of one point: it reads ``coord`` (k,), writes
    the weights and adds the point's loss sum and hit count into the zeroed ``loss`` and
    ``hits``. It is run twice on a side stream (cuDNN's autotuning and lazy initialisation
    happen outside the capture), then captured.
    """

    def __init__(self, body: Callable[[Tensor, Tensor, Tensor], None], k: int,
                 device: torch.device, dtype: torch.dtype, sum_dtype: torch.dtype):
        self.coord = torch.zeros(k, device=device, dtype=dtype)
        self.loss = torch.zeros((), device=device, dtype=sum_dtype)
        self.hits = torch.zeros((), device=device, dtype=torch.long)

        def point():
            self.loss.zero_()
            self.hits.zero_()
            body(self.coord, self.loss, self.hits)

        self.device = device
        with _CAPTURE, torch.cuda.device(device):  # the capture's streams on the model's GPU
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    point()
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: other threads may go on working on their own GPUs meanwhile;
            # cuDNN's autotuner off: a plan-cache miss inside the capture would benchmark
            # (allocate and synchronise) there
            cudnn = torch.backends.cudnn
            with cudnn.flags(enabled=cudnn.enabled, benchmark=False,
                             deterministic=cudnn.deterministic, allow_tf32=cudnn.allow_tf32), \
                    torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                point()

    def __call__(self, c: Tensor) -> tuple[Tensor, Tensor]:
        with torch.cuda.device(self.device):
            self.coord.copy_(c)
            self.graph.replay()
            return self.loss.clone(), self.hits.clone()
