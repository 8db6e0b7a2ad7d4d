"""Grid files (TOML) -> run configs, each validated before anything runs.

    [defaults]                     # any RunConfig key, shared by every study
    dataset = "digits"
    epochs = 8

    [analyses.hessian]             # analyses scheduled after each run (see `list analyses`)
    epochs = ["last"]

    [[study]]
    name = "initializers"          # stored as the runs' `study`
    init = ["lecun", "xavier"]     # a list on a scalar key sweeps it (cartesian product)
    seed = [0, 1]
    variants = [                   # optional: explicit combinations, crossed with the sweeps
      { arch = "mlp" },
      { arch = "vit", arch_options = { patch_size = 2 } },
    ]
    variants_opt = [               # more variant axes (any key starting with `variants`) are
      { optimizer = "sgd", lr = [0.03, 0.1, 0.3] },    # crossed with each other; a list
      { optimizer = "adam", lr = [3e-4, 1e-3, 3e-3] },  # inside a variant sweeps that key
    ]                                                    # for that variant only

A list of tables on a table-valued key (arch_options, optimizer_options, ...) sweeps it too
(a list of lists on a list-valued key), at study level and inside a variant alike.
"""
from __future__ import annotations

import itertools
import os
import tomllib
from dataclasses import fields
from pathlib import Path

from .config import RunConfig
from .errors import ConfigError, LandscapeError

_KINDS = {f.name: f.type for f in fields(RunConfig)}
_LIST_VALUED = {k for k, t in _KINDS.items() if t.startswith("list")}


def load_grid(path: str | os.PathLike, *, overrides: dict | None = None,
              studies: list[str] | None = None) -> list[RunConfig]:
    """Parse and validate a grid file; every run config is checked before anything runs."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"grid file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"grid file {path} is not valid TOML: {exc}") from None
    unknown = set(spec) - {"defaults", "study", "analyses"}
    if unknown:
        raise ConfigError(f"grid file {path}: unknown section(s) {sorted(unknown)}; "
                          "expected [defaults], [analyses] and [[study]]")
    defaults = dict(spec.get("defaults", {}))
    if "analyses" in spec:
        defaults["analyses"] = spec["analyses"]
    configs, seen = [], set()
    for study in spec.get("study", []):
        if studies and study.get("name") not in studies:
            continue
        for raw in expand_study(study, defaults):
            try:
                cfg = RunConfig.from_dict(raw).with_overrides(overrides or {})
                cfg.validate_names()
            except LandscapeError as exc:
                raise type(exc)(f"grid file {path}, study '{study.get('name', '?')}': {exc}") \
                    from None
            if cfg.run_id() not in seen:  # the same run listed twice trains once
                seen.add(cfg.run_id())
                configs.append(cfg)
    if not configs:
        raise ConfigError(f"grid file {path} defines no runs"
                          + (f" for studies {studies}" if studies else ""))
    return configs


def expand_study(study: dict, defaults: dict) -> list[dict]:
    study = dict(study)
    name = study.pop("name", "")
    axes = [study.pop(k) for k in sorted(study) if k.startswith("variants")]
    for i, axis in enumerate(axes):
        if not isinstance(axis, list) or not axis or not all(isinstance(v, dict) for v in axis):
            raise ConfigError(f"study '{name}': variants must be a non-empty list of tables")
        axes[i] = [v for variant in axis for v in expand_variant(variant, name)]
    sweeps = {k: v for k, v in study.items() if _is_sweep(k, v)}
    fixed = {k: v for k, v in study.items() if k not in sweeps}
    out = []
    for variant_combo in itertools.product(*axes):
        variant = {k: v for part in variant_combo for k, v in part.items()}
        for combo in itertools.product(*sweeps.values()):
            raw = {**defaults, **fixed, **variant, **dict(zip(sweeps, combo)), "study": name}
            out.append(raw)
    return out


def expand_variant(variant: dict, study: str = "") -> list[dict]:
    """A variant with sweeps (same rule as at study level) -> one variant per combination."""
    sweeps = {k: v for k, v in variant.items() if _is_sweep(k, v)}
    empty = [k for k, v in sweeps.items() if not v]
    if empty:
        raise ConfigError(f"study '{study}', variant {variant}: '{empty[0]}' sweeps an empty list")
    fixed = {k: v for k, v in variant.items() if k not in sweeps}
    return [{**fixed, **dict(zip(sweeps, combo))} for combo in itertools.product(*sweeps.values())]


def _is_sweep(key: str, value) -> bool:
    if not isinstance(value, list):
        return False
    if key in _LIST_VALUED:  # a list of lists sweeps a list-valued key
        return bool(value) and all(isinstance(v, list) for v in value)
    return True  # a list on a scalar key, or a list of tables on a table-valued key
