"""Directions in weight space for loss surfaces: random (filter-normalised), Hessian, PCA.

A *weight vector* is either a list of tensors in ``model.parameters()`` order and shapes, or
the same numbers as one flat 1-D tensor (``flatten``); ``to_flat``/``unflatten`` convert.
Only parameters take part: BatchNorm running statistics and other buffers are never moved.

Random directions follow Li et al. 2018 ("Visualizing the loss landscape of neural nets"):
draw a Gaussian direction d and rescale it so that each *filter* of d has the norm of the
matching filter of the model's weights. A filter is one slice along dim 0, i.e. one output
unit (a row of a Linear weight, an output channel of a Conv weight). 1-D parameters (biases,
norm weights) get a zero direction by default, as in Li et al.'s ``ignore='biasbn'``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...errors import ConfigError, check_choice
from ...params import flatten, vector_to_params

NORMALIZATIONS = ("filter", "layer", "none")
_EPS = 1e-10  # guards the division for an all-zero direction filter


def _params(model: nn.Module) -> list[Tensor]:
    return list(model.parameters())


def get_weights(model: nn.Module) -> list[Tensor]:
    """Detached copies of the model's parameters (``model.parameters()`` order)."""
    return [p.detach().clone() for p in _params(model)]


def unflatten(vec: Tensor, model: nn.Module) -> list[Tensor]:
    """Split a flat vector into views shaped like the model's parameters."""
    return vector_to_params(torch.as_tensor(vec), _params(model))


def to_flat(weights, model: nn.Module) -> Tensor:
    """A list of tensors or a flat tensor/array as one flat tensor on the model's device/dtype."""
    p0 = next(model.parameters())
    if isinstance(weights, (list, tuple)):
        params = _params(model)
        if len(weights) != len(params) or any(w.shape != p.shape for w, p in zip(weights, params)):
            raise ConfigError("weights must match model.parameters() in number and shapes")
        flat = flatten([torch.as_tensor(w) for w in weights])
    else:
        flat = torch.as_tensor(np.asarray(weights) if not isinstance(weights, Tensor) else weights)
        flat = flat.reshape(-1)
        total = sum(p.numel() for p in model.parameters())
        if flat.numel() != total:
            raise ConfigError(f"weight vector has {flat.numel()} entries but the model has "
                              f"{total} parameters")
    return flat.to(device=p0.device, dtype=p0.dtype)


@torch.no_grad()
def set_weights(model: nn.Module, weights) -> None:
    """Copy ``weights`` (list or flat) into the model's parameters, in place."""
    for p, w in zip(_params(model), unflatten(to_flat(weights, model), model)):
        p.copy_(w)


@torch.no_grad()
def normalize_direction(direction: Sequence[Tensor], weights: Sequence[Tensor], *,
                        normalization: str = "filter", ignore_1d: bool = True) -> list[Tensor]:
    """Rescale ``direction`` to the scale of ``weights`` (new tensors; inputs untouched).

    - ``"filter"``: each slice along dim 0 (one output unit) gets the norm of the weights' slice;
      for a 1-D parameter every entry is its own unit, so ``|d_i| = |w_i|``.
    - ``"layer"``: each parameter tensor as a whole gets the norm of the weight tensor.
    - ``"none"``: left as drawn.
    With ``ignore_1d`` (default) 1-D parameters (biases, norm scales) are set to zero.
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    out = []
    for d, w in zip(direction, weights):
        d = d.clone()
        if d.dim() <= 1 and ignore_1d:
            d.zero_()
        elif normalization == "filter":
            dims = tuple(range(1, d.dim()))
            d_norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True) if dims else d.abs()
            w_norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True) if dims else w.abs()
            d.mul_(w_norm / (d_norm + _EPS))
        elif normalization == "layer":
            d.mul_(w.norm() / (d.norm() + _EPS))
        out.append(d)
    return out


def random_direction(model: nn.Module, seed: int, *, normalization: str = "filter",
                     ignore_1d: bool = True) -> list[Tensor]:
    """A Gaussian direction, normalised to the model's weights (Li et al. 2018).

    Drawn on the CPU from ``torch.Generator().manual_seed(seed)`` in float32, so one seed gives
    the same direction on every device; then moved to the parameters' device and dtype.
    """
    return random_directions(model, seed, count=1, normalization=normalization,
                             ignore_1d=ignore_1d)[0]


def random_directions(model: nn.Module, seed: int, count: int = 2, *,
                      normalization: str = "filter", ignore_1d: bool = True) -> list[list[Tensor]]:
    """``count`` independent random directions drawn one after another from one seeded generator.

    ``random_directions(model, s, 2)`` gives the usual (d1, d2) pair of a 2-D surface; its first
    direction is ``random_direction(model, s)``.
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    gen = torch.Generator().manual_seed(int(seed))
    params = _params(model)
    weights = [p.detach() for p in params]
    out = []
    for _ in range(count):
        drawn = [torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device, p.dtype)
                 for p in params]
        out.append(normalize_direction(drawn, weights, normalization=normalization,
                                       ignore_1d=ignore_1d))
    return out


def eigenvector_directions(vecs, model: nn.Module, pair: tuple[int, int] = (0, 1), *,
                           normalization: str = "none", ignore_1d: bool = False
                           ) -> tuple[list[Tensor], list[Tensor]]:
    """Two Hessian eigenvectors (rows ``pair`` of ``vecs`` (k, P)) as a surface's (d1, d2).

    ``P`` is either all parameters or only those that require grad (as a Hessian over the
    trainable parameters gives); frozen parameters then get a zero direction. Eigenvectors are
    unit vectors, so by default they are used as they are (``normalization="none"``); pass
    ``"filter"`` to rescale them like random directions.
    """
    vecs = torch.as_tensor(vecs if isinstance(vecs, Tensor) else np.asarray(vecs))
    if vecs.dim() != 2:
        raise ConfigError(f"vecs must be a (k, P) matrix, got shape {tuple(vecs.shape)}")
    k = vecs.shape[0]
    if not all(0 <= i < k for i in pair):
        raise ConfigError(f"pair={pair} indexes outside the {k} eigenvectors given")
    params = _params(model)
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if vecs.shape[1] not in (total, trainable):
        raise ConfigError(f"eigenvectors have {vecs.shape[1]} entries; the model has {total} "
                          f"parameters ({trainable} trainable)")
    weights = [p.detach() for p in params]
    out = []
    for i in pair:
        v = vecs[i].to(device=weights[0].device, dtype=weights[0].dtype)
        if v.numel() == total:
            pieces = unflatten(v, model)
        else:  # Hessian over trainable parameters only: frozen ones stay put.
            sizes = [p.numel() for p in params if p.requires_grad]
            it = iter(torch.split(v, sizes))
            pieces = [next(it).view_as(p) if p.requires_grad else torch.zeros_like(p)
                      for p in params]
        out.append(normalize_direction(pieces, weights, normalization=normalization,
                                       ignore_1d=ignore_1d))
    return out[0], out[1]


def principal_axes(X: Tensor, k: int = 2) -> tuple[Tensor, Tensor]:
    """Top-``k`` right singular vectors of ``X`` (rows) and all explained-variance ratios.

    ``X`` (E, P) must already be centred as the caller wants. The SVD of the thin (E, P) matrix
    costs O(E^2 P), fine for P in the millions. Signs are fixed as in scikit-learn's
    ``svd_flip`` (largest-magnitude entry of each axis positive) so results are reproducible.
    """
    _, S, Vh = torch.linalg.svd(X, full_matrices=False)
    axes = Vh[:k]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)
    var = S ** 2
    total = var.sum()
    ratio = var / total if total > 0 else torch.zeros_like(var)
    if axes.shape[0] < k:  # fewer checkpoints than axes asked for: pad with zeros
        axes = torch.cat([axes, axes.new_zeros(k - axes.shape[0], axes.shape[1])])
        ratio = torch.cat([ratio, ratio.new_zeros(k - ratio.numel())])
    return axes, ratio


def pca_directions(trajectory, center) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
    """First two PCA directions of a weight trajectory around ``center`` (Li et al. 2018).

    ``trajectory`` (E, P) holds the per-epoch weight vectors, ``center`` (P,) the point the
    surface is drawn around (usually the final weights). As in Li et al.'s code, PCA (with its
    usual mean-centring) is run on the differences ``trajectory - center``, and each checkpoint
    is projected onto the plane: ``coords = (trajectory - center) @ [d1, d2]^T``.

    Returns ``(d1, d2, explained_variance_ratio (2,), coords (E, 2))``; d1, d2 are orthonormal
    flat tensors (use ``unflatten`` for per-parameter tensors).
    """
    W = torch.as_tensor(trajectory if isinstance(trajectory, Tensor) else np.asarray(trajectory))
    c = torch.as_tensor(center if isinstance(center, Tensor) else np.asarray(center))
    c = c.reshape(-1).to(W.device, W.dtype)
    if W.dim() != 2 or W.shape[1] != c.numel():
        raise ConfigError(f"trajectory must be (E, P) with P = {c.numel()} (the centre's size), "
                          f"got {tuple(W.shape)}")
    if W.shape[0] < 2:
        raise ConfigError("PCA directions need at least 2 checkpoints in the trajectory")
    diffs = W - c
    axes, ratio = principal_axes(diffs - diffs.mean(dim=0), k=2)
    coords = diffs @ axes.T
    return (axes[0], axes[1], ratio[:2].cpu().double().numpy(),
            coords.cpu().double().numpy())
