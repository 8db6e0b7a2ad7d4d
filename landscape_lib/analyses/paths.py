"""Optimizer paths on 2-D test surfaces: a real optimizer from the project's registry moves one
2-D parameter p = (x, y) downhill on z = f(p), and the path is recorded step by step.

Surfaces are torch functions f(xy) with xy of shape (..., 2) returning shape (...), so one
function serves both a single point (the optimised parameter) and a whole grid (contours).
Grids follow the convention of `surface.grids.surface_2d`: Z[j, i] = f(xs[i], ys[j]) (row = y).
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..optim import create_optimizer, get_spec, optimizer_step
from ..registry import Registry
from .grid_stats.gaussfit import FIT_OK, PARAMS, gaussian

SURFACES = Registry("test surface")
PATH_COLUMNS = ["step", "x", "y", "z", "diverged"]


def gaussian_surface(params: dict):
    """A torch function f(xy) of a fitted Gaussian (`gaussfit.fit_gaussian`'s parameters):
    xy has shape (..., 2), f(xy) shape (...)."""
    values = tuple(float(params[name]) for name in PARAMS)

    def gaussian_fit(xy: torch.Tensor) -> torch.Tensor:
        return gaussian(xy[..., 0], xy[..., 1], *values)

    gaussian_fit.params = dict(params)
    return gaussian_fit


def path_start(fit: dict, start=None) -> tuple[float, float]:
    """Where every optimizer path on a fitted surface starts: inside the fitted grid.

    ``fit``: a `fit_gaussian` result or its stored `gauss_fit` row. Default start: one width
    from the centre along each axis, towards the side of the grid with more room, clipped to
    the grid, x = clip(x0 +- s1, x_min, x_max) (likewise y): where a Gaussian's slope is
    steepest, so every optimizer has something to descend, and never the centre itself. A
    given ``start`` must lie inside the grid. A failed fit has no surface to run on: ConfigError
    naming its reason (`paths-analytic` still runs the optimizers on test surfaces).
    """
    if fit.get("status") != FIT_OK:
        reason = fit.get("reason") if fit.get("status") else \
            "stored before fits had a status; run the surface analysis again"
        raise ConfigError(f"the Gaussian fit failed ({reason}): there is no fitted surface to "
                          "run optimizers on (paths-analytic runs them on test surfaces)")
    box = [float(fit[k]) for k in ("x_min", "x_max", "y_min", "y_max")]
    if start:
        x, y = map(float, start)
        if not (box[0] <= x <= box[1] and box[2] <= y <= box[3]):
            raise ConfigError(f"start {list(start)} lies outside the fitted grid "
                              f"[{box[0]:g}, {box[1]:g}] x [{box[2]:g}, {box[3]:g}]")
        return x, y

    def axis(centre, width, lo, hi):
        step = width if hi - centre >= centre - lo else -width
        return float(np.clip(centre + step, lo, hi))

    return (axis(float(fit["x0"]), float(fit["s1"]), box[0], box[1]),
            axis(float(fit["y0"]), float(fit["s2"]), box[2], box[3]))


def himmelblau(xy: torch.Tensor) -> torch.Tensor:
    """Himmelblau's function: four global minima of value 0, a local maximum at (-0.27, -0.92)."""
    x, y = xy[..., 0], xy[..., 1]
    return (x ** 2 + y - 11) ** 2 + (x + y ** 2 - 7) ** 2


def saddle(xy: torch.Tensor) -> torch.Tensor:
    """The saddle x^2 - y^2: a minimum along x, a maximum along y, unbounded below."""
    return xy[..., 0] ** 2 - xy[..., 1] ** 2


def rosenbrock(xy: torch.Tensor) -> torch.Tensor:
    """Rosenbrock's banana valley (1 - x)^2 + 100 (y - x^2)^2, minimum 0 at (1, 1)."""
    x, y = xy[..., 0], xy[..., 1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


def bowl(xy: torch.Tensor) -> torch.Tensor:
    """The convex, elongated bowl x^2 + 4 y^2 (condition number 4), minimum 0 at the origin."""
    return xy[..., 0] ** 2 + 4 * xy[..., 1] ** 2


# A Gaussian well like one fitted to a loss basin (fitted ones come from gaussian_surface).
gaussian_well = gaussian_surface(dict(A=-1.0, x0=0.0, y0=0.0, s1=1.0, s2=0.5, offset=0.0))
gaussian_well.__doc__ = "A Gaussian loss well -exp(-(x^2/2 + 2 y^2)), minimum -1 at the origin."

# The saddle starts just off its ridge (y = 0.01): on the ridge the gradient has no y part.
SURFACES.register("himmelblau", himmelblau, start=(0.0, 0.0), xlim=(-5, 5), ylim=(-5, 5))
SURFACES.register("saddle", saddle, start=(1.0, 0.01), xlim=(-2, 2), ylim=(-2, 2))
SURFACES.register("rosenbrock", rosenbrock, start=(-1.5, 2.0), xlim=(-2, 2), ylim=(-1, 3))
SURFACES.register("bowl", bowl, start=(1.5, 1.0), xlim=(-2, 2), ylim=(-2, 2))
SURFACES.register("gaussian_well", gaussian_well, start=(1.5, 0.8), xlim=(-3, 3), ylim=(-3, 3))


def resolve_surface(surface) -> tuple[str, Callable, dict]:
    """(name, function, meta) for a registered name or a torch function f(xy)."""
    if isinstance(surface, str):
        entry = SURFACES.entry(surface)
        return entry.name, entry.obj, entry.meta
    if callable(surface):
        return getattr(surface, "__name__", "custom"), surface, {}
    raise ConfigError(f"a surface is a registered name ({', '.join(SURFACES.names())}) "
                      f"or a torch function f(xy); got {type(surface).__name__}")


def surface_grid(surface, xlim=None, ylim=None, n: int = 101):
    """(xs, ys, Z) on an n x n grid, evaluated in one batch; Z[j, i] = f(xs[i], ys[j])."""
    _, f, meta = resolve_surface(surface)
    xlim, ylim = xlim or meta.get("xlim"), ylim or meta.get("ylim")
    if xlim is None or ylim is None:
        raise ConfigError("give xlim and ylim for a surface that is not registered")
    xs = torch.linspace(*map(float, xlim), n, dtype=torch.float64)
    ys = torch.linspace(*map(float, ylim), n, dtype=torch.float64)
    with torch.no_grad():
        Z = f(torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1))
    return xs.numpy(), ys.numpy(), Z.numpy()


def _first_true(mask: torch.Tensor) -> int | None:
    rows = torch.nonzero(mask)
    return int(rows[0, 0]) if len(rows) else None


def _first_bad_point(points: torch.Tensor, bound: float | None) -> int | None:
    """Index of the first row that is non-finite or has a coordinate beyond +-bound, else None."""
    bad = ~torch.isfinite(points).all(dim=-1)
    if bound is not None:
        bad |= points.abs().amax(dim=-1) > bound
    return _first_true(bad)


def optimizer_path(surface, optimizer_name: str, start=None, steps: int = 200, lr: float = 0.01,
                   *, weight_decay: float = 0.0, bound: float | None = 1e6,
                   check_every: int = 10, device="cpu", **opt_kwargs) -> pd.DataFrame:
    """Run `optimizer_name` for `steps` steps on one 2-D parameter; rows (step, x, y, z, diverged).

    Step 0 is the start. A path diverges when its point or loss becomes non-finite or a
    coordinate leaves [-bound, bound] (bound=None: only non-finite counts); it then stops at the
    last good point and `diverged` is True on all of its rows. Runs in float64 on `device`.
    """
    _, f, meta = resolve_surface(surface)
    start = meta.get("start") if start is None else start
    if start is None or len(start) != 2:
        raise ConfigError(f"start must be a point (x, y); got {start!r}")
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    spec = get_spec(optimizer_name)
    p = torch.nn.Parameter(torch.tensor([float(v) for v in start], dtype=torch.float64,
                                        device=device))
    optimizer = create_optimizer(optimizer_name, [p], lr=lr, weight_decay=weight_decay,
                                 **opt_kwargs)

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = f(p)
        loss.backward(create_graph=spec.create_graph)
        return loss

    points = torch.full((steps + 1, 2), float("nan"), dtype=torch.float64, device=device)
    points[0] = p.detach()
    for t in range(1, steps + 1):
        optimizer_step(optimizer, spec, closure)
        points[t] = p.detach()
        # Look for divergence only now and then: each check waits for the device.
        if (t % check_every == 0 or t == steps) \
                and _first_bad_point(points[:t + 1], bound) is not None:
            points = points[:t + 1]
            break
    with torch.no_grad():
        z = f(points)
    bad = [b for b in (_first_bad_point(points, bound), _first_true(~torch.isfinite(z)))
           if b is not None]
    keep = min(bad) if bad else len(points)
    points, z = points[:keep].cpu().numpy(), z[:keep].cpu().numpy()
    return pd.DataFrame({"step": np.arange(keep), "x": points[:, 0], "y": points[:, 1], "z": z,
                         "diverged": bool(bad)})


def compare_optimizers(surface, names: Iterable[str], start=None, steps: int = 200,
                       lr: float | Mapping[str, float] = 0.01, *, progress: bool = False,
                       **kwargs) -> pd.DataFrame:
    """Paths of several optimizers from the same start; rows (surface, optimizer, step, x, y, z,
    diverged). `lr` is one value or a mapping optimizer name -> learning rate."""
    surface_name = resolve_surface(surface)[0]
    names = list(names)
    frames = []
    for name in tqdm(names, desc="optimizer paths", disable=not progress):
        rate = lr[name] if isinstance(lr, Mapping) else lr
        path = optimizer_path(surface, name, start, steps, rate, **kwargs)
        frames.append(path.assign(surface=surface_name, optimizer=name))
    return pd.concat(frames, ignore_index=True)[["surface", "optimizer", *PATH_COLUMNS]]
