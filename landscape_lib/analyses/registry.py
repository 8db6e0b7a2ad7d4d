"""The analyses registry: every analysis a user can schedule, run from the CLI or the Lab.

An analysis is data (name, defaults, what it needs) plus a function `run(ctx, params)` that
writes its tables through `ctx.write(...)`. Parameters not in `defaults` are refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import ConfigError
from ..registry import Registry

ANALYSES = Registry("analysis")


@dataclass(frozen=True)
class Analysis:
    name: str
    run: Callable            # run(ctx, params) -> None
    defaults: dict
    description: str
    tables: tuple            # the result tables it writes
    needs_run: bool = True   # False: a stand-alone study (no run, no checkpoint)
    check: Callable | None = field(default=None)  # check(ctx, params): raise before any write
    applies: Callable | None = field(default=None)  # applies(cfg): False = skip when scheduled


def register(spec: Analysis) -> Analysis:
    ANALYSES.register(spec.name, spec)
    return spec


def analysis_options(name: str) -> dict:
    return dict(ANALYSES.get(name).defaults)


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
