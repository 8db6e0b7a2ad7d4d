"""The analyses registry: every analysis a user can schedule, run from the CLI or the Lab.

An analysis is data: its name, parameters with defaults, the tables it writes and what it needs.
Its code is named, not imported: ``run`` (and ``check``) are "module:function" references into
``landscape_lib.analyses.runners``, loaded only when the analysis runs. So this module, with
every analysis registered, imports no torch (the dashboard reads it in milliseconds), and no
registration happens as a side effect of importing code. Parameters not in ``defaults`` are
refused, and each value must be of its default's kind and within the analysis's ``limits``
(``resolve_params``): the CLI, scheduled analyses and the dashboard's Lab (server side) read
the same limits, ``ANALYSES.get(name).limits[param]`` (a ``landscape_lib.limits.Limit``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ConfigError
from ..limits import Limit
from ..registry import Registry, check_value
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
    limits: dict = field(default_factory=dict)  # parameter -> Limit (values it accepts)

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
    """The analysis's parameters: its defaults updated with `given`, every value checked
    (known name, its default's kind, within `limits`)."""
    spec = ANALYSES.get(name)
    unknown = set(given) - set(spec.defaults)
    if unknown:
        raise ConfigError(f"analysis '{name}' has no parameter(s) {sorted(unknown)}; "
                          f"accepted: {', '.join(spec.defaults)}")
    params = {**spec.defaults, **given}
    for key, default in spec.defaults.items():
        if key in spec.limits:
            params[key] = spec.limits[key].check(f"analysis '{name}': {key}", params[key])
        else:
            check_value(f"analysis '{name}'", key, params[key], default)
    return params


# Keys of a scheduled analysis (`[analyses.<kind>]` of a grid) that are not parameters.
SCHEDULING = {"epochs": "a list of checkpoint epochs (numbers, 'first' or 'last')",
              "seeds": "a list of direction seeds (integers)"}


def check_schedule(table, checkpoint_epochs: list[int]) -> None:
    """A run's `analyses` table, before anything runs: each kind known, its parameters valid,
    `epochs` among the run's checkpoint epochs, `seeds` integers."""
    if not isinstance(table, dict):
        raise ConfigError(f"analyses must be a table of analyses, not {table!r}")
    for kind, spec in table.items():
        ANALYSES.entry(kind)  # UnknownNameError lists the analyses
        if not isinstance(spec, dict):
            raise ConfigError(f"analyses.{kind} must be a table of parameters, not {spec!r}")
        params = {k: v for k, v in spec.items() if k not in SCHEDULING}
        resolve_params(kind, params)
        epochs, seeds = spec.get("epochs", ["last"]), spec.get("seeds", [0])
        if not isinstance(epochs, list) or not all(
                e in ("first", "last") or e in checkpoint_epochs for e in epochs):
            raise ConfigError(f"analyses.{kind}: epochs must be {SCHEDULING['epochs']} among "
                              f"the run's checkpoints {checkpoint_epochs}, not {epochs!r}")
        if not isinstance(seeds, list) or not seeds:
            raise ConfigError(f"analyses.{kind}: seeds must be {SCHEDULING['seeds']}, "
                              f"not {seeds!r}")
        for seed in seeds:
            _SEED.check(f"analyses.{kind}: seeds", seed)


def _is_vit(cfg) -> bool:
    return cfg.arch == "vit"


_SAMPLE = {"split": "train", "data_seed": 0}  # which examples an analysis evaluates on
_PATHS = {"optimizers": [], "steps": 200, "lr": 0.01}

# What each parameter accepts (choices are the implementations' own: a test keeps them equal).
# `lab_max`: the largest value the dashboard's Lab lets a browser ask for.
_SEED = Limit.interval("[0, 2**31)", integer=True)
_COUNT = Limit.interval("[1, 2**24]", integer=True, lab_max=100_000)
_SAMPLE_LIMITS = {"samples": _COUNT, "split": Limit.one_of("train", "test"), "data_seed": _SEED}
_PATH_LIMITS = {"steps": Limit.interval("[1, 1000000]", integer=True, lab_max=100_000),
                "lr": Limit.interval("(0, inf)")}

register(Analysis(
    "hessian", "curvature:run_hessian", description="Hessian spectrum: top eigenvalues and "
    "lambda_min with residual bounds, trace, density (SLQ), negative and near-zero shares, "
    "per-layer top eigenvalue and trace; products and seconds per part; of the plain "
    "cross-entropy (loss='ce') or the training loss with its label smoothing (loss='train')",
    defaults=hessian_settings.defaults(),
    tables=("hessian_eigs", "hessian_summary", "hessian_density", "analysis_costs"),
    check="curvature:check_hessian",
    limits={**_SAMPLE_LIMITS, "seed": _SEED,  # samples = 0: the whole split
            "samples": Limit.interval("[0, 2**24]", integer=True, lab_max=100_000),
            "top_k": Limit.interval("[1, 1000]", integer=True, lab_max=100),
            "bottom_k": Limit.interval("[0, 1000]", integer=True, lab_max=100),
            "tol": Limit.interval("(0, 1]"), "bottom_tol": Limit.interval("(0, 1]"),
            "bottom_max_steps": Limit.interval("[1, 100000]", integer=True, lab_max=1000),
            "neg_eps": Limit.interval("(0, 1]"), "layer_tol": Limit.interval("(0, 1]"),
            "trace_samples": Limit.interval("[1, 1000000]", integer=True, lab_max=10_000),
            "density_vectors": Limit.interval("[1, 1000]", integer=True, lab_max=100),
            "density_steps": Limit.interval("[2, 10000]", integer=True, lab_max=1000),
            "layer_steps": Limit.interval("[1, 10000]", integer=True, lab_max=1000),
            "hvp_chunk": Limit.interval("[0, 1000000]", integer=True),
            "layer_method": Limit.one_of(*hessian_settings.LAYER_METHODS),
            "engine": Limit.one_of(*hessian_settings.ENGINES)}))
register(Analysis(
    "surface", "surfaces:run_surface", description="2-D loss/accuracy grid around a checkpoint "
    "along random filter-normalised, top-Hessian-eigenvector or trajectory-PCA directions, with "
    "wavelets, persistence and a Gaussian fit of the grid",
    defaults={"directions": "random", "seed": 0, "grid": 21, "span": 1.0, "samples": 1024,
              **_SAMPLE, "bn": "fixed", "bn_samples": 512, "precision": "fp32",
              "normalization": "filter", "include_1d": False, "pair": [0, 1]},
    tables=("surface_points", "surface_summary", "wavelets", "persistence", "gauss_fit"),
    check="surfaces:check_surface",
    limits={**_SAMPLE_LIMITS, "seed": _SEED, "bn_samples": _COUNT,
            "directions": Limit.one_of("random", "eigen", "pca"),
            "grid": Limit.interval("[3, 401]", integer=True, lab_max=201),
            "span": Limit.interval("(0, 1000]", lab_max=10),
            "bn": Limit.one_of("fixed", "recompute"), "precision": Limit.one_of("fp32", "bf16"),
            "normalization": Limit.one_of("filter", "layer", "none")}))
register(Analysis(
    "interpolation", "surfaces:run_interpolation", description="1-D linear interpolation "
    "(1-a) w_from + a w_epoch between two checkpoints (of this run or another); BatchNorm "
    "statistics interpolated too (bn='auto' for nets with BN), recomputed or fixed",
    defaults={"from_epoch": "first", "other_run": "", "alpha_min": -0.25, "alpha_max": 1.25,
              "points": 31, "samples": 1024, **_SAMPLE, "bn": "auto", "bn_samples": 512},
    tables=("interpolation",), check="surfaces:check_interpolation",
    limits={**_SAMPLE_LIMITS, "alpha_min": Limit(), "alpha_max": Limit(), "bn_samples": _COUNT,
            "from_epoch": Limit.interval("[0, 2**31)", integer=True, words=("first", "last")),
            "points": Limit.interval("[2, 100000]", integer=True, lab_max=1001),
            "bn": Limit.one_of("auto", "fixed", "interpolate", "recompute")}))
register(Analysis(
    "trajectory", "studies:run_trajectory", description="PCA and t-SNE embeddings of the "
    "per-epoch weights (coloured by epoch)", defaults={"seed": 0}, tables=("trajectory",),
    limits={"seed": _SEED}))
register(Analysis(
    "attention", "studies:run_attention", description="Jensen-Shannon divergence between the "
    "attention maps of adjacent layers, per head, on held-out inputs (RealFormer's heat map)",
    defaults={"samples": 256, "split": "test", "data_seed": 0},
    tables=("attention_jsd",), check="studies:check_attention", applies=_is_vit,
    limits=_SAMPLE_LIMITS))
register(Analysis(
    "attention-hessian", "studies:run_attention_hessian", description="Hessian of one "
    "self-attention layer split into query/key/value blocks and Gauss-Newton/functional parts, "
    "Frobenius norms across input scales (softmax vs linear, with/without Pre-LN)",
    defaults={"scales": [0.1, 0.3, 1.0, 3.0, 10.0], "d": 4, "T": 5, "n": 8, "seed": 0,
              "bins": 40},
    tables=("attention_hessian", "attention_hessian_hist"), needs_run=False,
    limits={"seed": _SEED, "bins": Limit.interval("[1, 10000]", integer=True),
            **{k: Limit.interval("[1, 1024]", integer=True, lab_max=64) for k in "dTn"}}))
register(Analysis(
    "paths", "studies:run_paths", description="optimizer paths (every registry optimizer) on "
    "the Gaussian fit of the run's surface, from a start inside its grid",
    defaults={**_PATHS, "start": []}, tables=("optimizer_paths",), check="studies:check_paths",
    limits=_PATH_LIMITS))
register(Analysis(
    "paths-analytic", "studies:run_paths_analytic", description="optimizer paths on analytic "
    "test surfaces (Himmelblau, saddle, Rosenbrock)",
    defaults={**_PATHS, "surfaces": ["himmelblau", "saddle", "rosenbrock"]},
    tables=("optimizer_paths",), needs_run=False, limits=_PATH_LIMITS))
