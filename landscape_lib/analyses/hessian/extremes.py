"""The analysis' extreme eigenpairs from what the SLQ found (``analysis`` parts 2 and 4):
``top_from_density`` (the top-k from the probes' Krylov spaces, or Lanczos when they do not
hold) and ``lowest_of_both`` (lambda_min as the lower of the bottom Lanczos' value and the
lowest SLQ node)."""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch

from .lanczos import Eigen, device_dtype, extreme_eigenpairs, scientific, seeded_generator, verify
from .settings import HessianSettings
from .spectrum import SLQResult


def top_from_density(op, q: SLQResult, s: HessianSettings, progress: bool = False) -> Eigen:
    """The top-k eigenpairs from the SLQ probes' Krylov spaces (module docstring, part 2):
    their measured residuals within ``s.tol`` and nothing missed, or else Lanczos from their
    sum plus a seeded Gaussian. ``n_products`` counts every product of the part; ``steps`` the
    Lanczos' (0 when the SLQ pairs were kept)."""
    k, checked = s.top_k, 0
    if q.top is not None and q.top.shape[1] == k:
        values, residuals, conv = verify(op, q.top, s.tol)
        checked = k
        # settled by the recurrence, tenfold inside tol, yet measured outside it: the rest is
        # the products' own rounding (TF32's ~1e-3 at a trained ResNet-18), which another
        # Lanczos over the same products cannot go below: kept, with their flags and a warning
        floor = not conv.all() and bool(np.all(q.top_settled <= 0.1 * s.tol * np.abs(
            q.top_values)))
        if (conv.all() or floor) and not q.misses(values, residuals, s.tol):
            order = np.argsort(values)[::-1]
            if floor:
                warnings.warn(
                    f"the top Ritz pairs are settled (recurrence residuals within "
                    f"{0.1 * s.tol:g} of their values) but measure relative residuals "
                    f"{scientific(residuals / np.abs(values))} against tol={s.tol}: the "
                    f"products' rounding; stored as not converged", RuntimeWarning,
                    stacklevel=3)
            return Eigen(values[order], q.top[:, torch.as_tensor(order.copy())],
                         residuals[order], conv[order], k, 0)
    start = None
    if q.top is not None:  # their sum, for a fast start, and a seeded Gaussian, for what
        device, dtype = device_dtype(op)  # their Krylov space may lack, in equal parts
        g = torch.randn(q.top.shape[0], generator=seeded_generator(device, s.seed),
                        device=device, dtype=dtype)
        y = q.top.sum(1)
        start = y / y.norm() + g / g.norm()
    top = extreme_eigenpairs(op, k, "LA", s.tol, start=start, seed=s.seed, progress=progress)
    return dataclasses.replace(top, n_products=top.n_products + checked)


def lowest_of_both(op, bottom: Eigen, q: SLQResult, tol: float, floor: float
                   ) -> tuple[Eigen, bool]:
    """lambda_min as the lower of two Ritz values, each with a residual measured with ``op``.

    The bottom Lanczos' value and the lowest SLQ node are both Ritz values, hence both >=
    lambda_min (up to the products' rounding); the lower one is the better estimate. The SLQ
    node's residual ``||H y - node y||`` is measured with one product. Returns the bottom
    eigenpairs with the lower value first, and whether the two agree: the Lanczos value
    exceeds the node by at most the sum of their residuals (a Lanczos run that stopped far
    above a lower node did not converge to lambda_min).
    """
    rayleigh, res, _ = verify(op, q.lowest[:, None], tol, floor)
    node = q.lowest_node
    node_res = float(np.hypot(res[0], rayleigh[0] - node))  # Hy - node y, split orthogonally
    consistent = bool(bottom.values[0] <= node + bottom.residuals[0] + node_res)
    counted = dataclasses.replace(bottom, n_products=bottom.n_products + 1)
    if node >= bottom.values[0]:
        return counted, consistent
    vectors = bottom.vectors.clone()
    vectors[:, 0] = q.lowest

    def first(a: np.ndarray, v) -> np.ndarray:  # the lowest pair replaced by the node's
        return np.concatenate([[v], a[1:]])

    return dataclasses.replace(
        counted, values=first(bottom.values, node), vectors=vectors,
        residuals=first(bottom.residuals, node_res),
        converged=first(bottom.converged, node_res <= tol * max(abs(node), floor))
    ), consistent
