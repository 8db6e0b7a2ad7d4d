"""2-D embeddings of a weight-space trajectory (one flattened weight vector per checkpoint).

``flatten_state`` turns a model or a checkpoint's state dict into the flat parameter vector
(``model.parameters()`` order, as everywhere: ``params.flatten``); stack those into ``W``
(E, P) and embed it with PCA or t-SNE to draw the path coloured by epoch.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from sklearn.manifold import TSNE
from torch import Tensor, nn

from ..errors import ConfigError
from ..params import flatten
from .surface.directions import principal_axes

# BatchNorm buffers: in a state dict, but not parameters (used when no model is given).
_BN_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def flatten_state(state: nn.Module | Mapping[str, Tensor], model: nn.Module | None = None
                  ) -> Tensor:
    """The parameters of a model or state dict as one flat tensor (``model.parameters()`` order).

    For a state dict, pass ``model`` to pick exactly its parameters by name; without it every
    floating-point entry except BatchNorm running statistics is taken, in the dict's order
    (which is the parameter order for a ``model.state_dict()`` without other buffers).
    """
    if isinstance(state, nn.Module):
        return flatten([p.detach() for p in state.parameters()])
    if model is not None:
        names = [n for n, _ in model.named_parameters()]
        missing = [n for n in names if n not in state]
        if missing:
            raise ConfigError(f"state dict lacks parameters of the model: {', '.join(missing[:5])}")
        return flatten([torch.as_tensor(state[n]).detach() for n in names])
    tensors = [torch.as_tensor(v).detach() for k, v in state.items()
               if torch.is_tensor(v) and v.is_floating_point()
               and not k.endswith(_BN_BUFFER_SUFFIXES)]
    if not tensors:
        raise ConfigError("state dict holds no floating-point parameters")
    return flatten(tensors)


def _as_matrix(W) -> Tensor:
    W = W if isinstance(W, Tensor) else torch.as_tensor(np.asarray(W))
    if W.dim() != 2:
        raise ConfigError(f"trajectory must be an (E, P) matrix, got shape {tuple(W.shape)}")
    return W.detach()


def pca_embedding(W) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the checkpoints ``W`` (E, P): coordinates (E, 2) on the first two principal axes
    of the mean-centred trajectory, and their explained-variance ratios (2,)."""
    W = _as_matrix(W)
    if W.shape[0] < 2:
        raise ConfigError("a trajectory embedding needs at least 2 checkpoints")
    centred = W - W.mean(dim=0)
    axes, ratio = principal_axes(centred, k=2)
    return (centred @ axes.T).cpu().double().numpy(), ratio[:2].cpu().double().numpy()


def tsne_embedding(W, seed: int, perplexity: float | None = None, *, max_iter: int = 1000
                   ) -> np.ndarray:
    """t-SNE (scikit-learn) of the checkpoints ``W`` (E, P) -> coordinates (E, 2).

    ``perplexity`` defaults to ``min(30, (E - 1) / 3)`` and is clipped below E (t-SNE needs
    perplexity < number of points). The checkpoints are first written in the coordinates of
    all their principal axes: this keeps every pairwise distance (so t-SNE sees the same
    data) while shrinking P (millions) to at most E. ``max_iter``: optimisation steps (>= 250).
    """
    W = _as_matrix(W)
    n = W.shape[0]
    if n < 3:
        raise ConfigError(f"t-SNE needs at least 3 checkpoints, got {n}")
    if perplexity is None:
        perplexity = min(30.0, (n - 1) / 3)
    perplexity = float(min(max(perplexity, 1.0), n - 1))
    U, S, _ = torch.linalg.svd(W - W.mean(dim=0), full_matrices=False)
    X = (U * S).cpu().double().numpy()  # same pairwise distances as the rows of W
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=int(seed),
                max_iter=int(max_iter))
    return tsne.fit_transform(X).astype(np.float64)
