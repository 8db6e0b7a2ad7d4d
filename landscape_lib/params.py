"""Parameters as vectors, and the layers whose weights are re-initialized and measured.

A *weight vector* is the model's parameters in ``model.parameters()`` order, flattened into one
1-D tensor (``flatten``); ``vector_to_params`` splits one back into parameter-shaped views.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from .errors import ConfigError

# Layers whose weights are (re)initialized and measured per epoch (conv kernels as matrices);
# norm layers, embeddings etc. keep their own init.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The Linear and Conv1d/2d/3d layers of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def flatten(tensors: Iterable[Tensor]) -> Tensor:
    """Concatenate tensors into one 1-D vector (parameter order)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def vector_to_params(vec: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector (e.g. a Hessian eigenvector) into tensors shaped like ``params``.

    Unlike ``torch.nn.utils.vector_to_parameters`` nothing is written into the parameters: the
    pieces are views of ``vec``, ready to use as a direction in parameter space.
    """
    sizes = [p.numel() for p in params]
    if vec.numel() != sum(sizes):
        raise ConfigError(f"vector has {vec.numel()} entries but the parameters have {sum(sizes)}")
    return [piece.view_as(p) for piece, p in zip(torch.split(vec.reshape(-1), sizes), params)]


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` in eval mode for the block and restore each module's own flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
