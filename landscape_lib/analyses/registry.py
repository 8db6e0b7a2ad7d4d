"""The analyses registry: every analysis a user can schedule, run from the CLI or the Lab.

An analysis is data: its name, parameters with defaults, the tables it writes and what it needs.
Its code is named, not imported: ``run`` (and ``check``) are "module:function" references into
``landscape_lib.analyses.runners``, loaded only when the analysis runs. So this module, with
every analysis registered, imports no torch (the dashboard reads it in milliseconds), and no
registration happens as a side effect of importing code. Parameters not in ``defaults`` are
refused (``resolve_params``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ConfigError
from ..registry import Registry
from .hessian import settings as hessian_settings

ANALYSES = Registry("analysis", options=lambda entry: entry.obj.defaults)


@dataclass(frozen=True)
class Analysis:
    name: str
    run: str                 # "module:function" in analyses.runners; run(ctx, params) -> None
    defaults: dict
    description: str
    tables: tuple            # the result tables it writes
    needs_run: bool = True   # False: a stand-alone study (no run, no checkpoint)
    check: str | None = None  # like `run`; check(ctx, params) raises before any write
    applies: Callable | None = field(default=None)  # applies(cfg): False = skip when scheduled

    def runner(self) -> Callable:
        return _load(self.run)

    def checker(self) -> Callable | None:
        return _load(self.check) if self.check else None


def _load(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"{__package__}.runners.{module}"), name)


def register(spec: Analysis) -> Analysis:
    ANALYSES.register(spec.name, spec)
    return spec


def resolve_params(name: str, given: dict) -> dict:
    spec = ANALYSES.get(name)
    unknown = set(given) - set(spec.defaults)
    if unknown:
        raise ConfigError(f"analysis '{name}' has no parameter(s) {sorted(unknown)}; "
                          f"accepted: {', '.join(spec.defaults)}")
    params = {**spec.defaults, **given}
    for key, default in spec.defaults.items():
        value = params[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"analysis '{name}': {key} must be true or false, not {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ConfigError(f"analysis '{name}': {key} must be a number, not {value!r}")
    return params


def _is_vit(cfg) -> bool:
    return cfg.arch == "vit"


_SAMPLE = {"split": "train", "data_seed": 0}  # which examples an analysis evaluates on
_PATHS = {"optimizers": [], "steps": 200, "lr": 0.01}

register(Analysis(
    "hessian", "curvature:run_hessian", description="Hessian spectrum: top eigenvalues and "
    "lambda_min with residual bounds, trace, density (SLQ), negative and near-zero shares, "
    "per-layer top eigenvalue and trace; products and seconds per part; of the plain "
    "cross-entropy (loss='ce') or the training loss with its label smoothing (loss='train')",
    defaults=hessian_settings.defaults(),
    tables=("hessian_eigs", "hessian_summary", "hessian_density", "analysis_costs"),
    check="curvature:check_hessian"))
register(Analysis(
    "surface", "surfaces:run_surface", description="2-D loss/accuracy grid around a checkpoint "
    "along random filter-normalised, top-Hessian-eigenvector or trajectory-PCA directions, with "
    "wavelets, persistence and a Gaussian fit of the grid",
    defaults={"directions": "random", "seed": 0, "grid": 21, "span": 1.0, "samples": 1024,
              **_SAMPLE, "bn": "fixed", "bn_samples": 512, "precision": "fp32",
              "normalization": "filter", "include_1d": False, "pair": [0, 1]},
    tables=("surface_points", "surface_summary", "wavelets", "persistence", "gauss_fit"),
    check="surfaces:check_surface"))
register(Analysis(
    "interpolation", "surfaces:run_interpolation", description="1-D linear interpolation "
    "(1-a) w_from + a w_epoch between two checkpoints (of this run or another); BatchNorm "
    "statistics interpolated too (bn='auto' for nets with BN), recomputed or fixed",
    defaults={"from_epoch": "first", "other_run": "", "alpha_min": -0.25, "alpha_max": 1.25,
              "points": 31, "samples": 1024, **_SAMPLE, "bn": "auto", "bn_samples": 512},
    tables=("interpolation",), check="surfaces:check_interpolation"))
register(Analysis(
    "trajectory", "studies:run_trajectory", description="PCA and t-SNE embeddings of the "
    "per-epoch weights (coloured by epoch)", defaults={"seed": 0}, tables=("trajectory",)))
register(Analysis(
    "attention", "studies:run_attention", description="Jensen-Shannon divergence between the "
    "attention maps of adjacent layers, per head, on held-out inputs (RealFormer's heat map)",
    defaults={"samples": 256, "split": "test", "data_seed": 0},
    tables=("attention_jsd",), check="studies:check_attention", applies=_is_vit))
register(Analysis(
    "attention-hessian", "studies:run_attention_hessian", description="Hessian of one "
    "self-attention layer split into query/key/value blocks and Gauss-Newton/functional parts, "
    "Frobenius norms across input scales (softmax vs linear, with/without Pre-LN)",
    defaults={"scales": [0.1, 0.3, 1.0, 3.0, 10.0], "d": 4, "T": 5, "n": 8, "seed": 0,
              "bins": 40},
    tables=("attention_hessian", "attention_hessian_hist"), needs_run=False))
register(Analysis(
    "paths", "studies:run_paths", description="optimizer paths (every registry optimizer) on "
    "the Gaussian fit of the run's surface, from a start inside its grid",
    defaults={**_PATHS, "start": []}, tables=("optimizer_paths",), check="studies:check_paths"))
register(Analysis(
    "paths-analytic", "studies:run_paths_analytic", description="optimizer paths on analytic "
    "test surfaces (Himmelblau, saddle, Rosenbrock)",
    defaults={**_PATHS, "surfaces": ["himmelblau", "saddle", "rosenbrock"]},
    tables=("optimizer_paths",), needs_run=False))
