"""Limits as data (`landscape_lib.limits`): run fields and analysis parameters are refused
outside them before anything runs, and the registry's choices are the implementations' own."""
import math

import pytest

from landscape_lib.analyses.registry import ANALYSES, check_schedule, resolve_params
from landscape_lib.config import FIELD_LIMITS, RunConfig
from landscape_lib.errors import ConfigError, LandscapeError
from landscape_lib.limits import Limit


@pytest.mark.parametrize("text, inside, outside", [
    ("(0, inf)", [1e-9, 1e300], [0, -1, math.inf, math.nan]),
    ("[0, 1)", [0, 0.999], [1, -1e-9, math.nan]),
    ("[3, 401]", [3, 401], [2, 402]),
    ("[0, 2**31)", [0, 2**31 - 1], [2**31, -1]),
])
def test_interval_bounds(text, inside, outside):
    limit = Limit.interval(text)
    for value in inside:
        assert limit.check("x", value) == value
    for value in outside:
        with pytest.raises(ConfigError, match=r"^x"):
            limit.check("x", value)


def test_integer_limits_take_integral_floats_only():
    limit = Limit.interval("[1, 100]", integer=True)
    assert limit.check("n", 10.0) == 10 and isinstance(limit.check("n", 10.0), int)
    for value in (1.5, True, "3", math.inf):
        with pytest.raises(ConfigError, match="n"):
            limit.check("n", value)
    assert Limit.interval("[0, 9]", integer=True, words=("last",)).check("e", "last") == "last"


def test_every_field_limit_names_a_field_and_admits_its_default():
    defaults = RunConfig()
    for name, limit in FIELD_LIMITS.items():
        limit.check(name, getattr(defaults, name))


@pytest.mark.parametrize("field, value", [
    ("lr", math.nan), ("lr", math.inf), ("weight_decay", -1.0), ("momentum", 5.0),
    ("grad_clip", -1.0), ("label_smoothing", 2.0), ("seed", 2**31), ("seed", -1),
    ("epochs", 0), ("sketch_dim", 0), ("checkpoint_epochs", [99]), ("checkpoint_epochs", ["a"]),
    ("compile_mode", "fast"), ("tags", [[1]]),
])
def test_run_fields_out_of_range_are_refused(field, value):
    with pytest.raises(ConfigError, match=field):
        RunConfig.from_dict({"epochs": 3, field: value})


def test_every_analysis_default_is_within_its_limits():
    for entry in ANALYSES:
        spec = entry.obj
        assert set(spec.limits) <= set(spec.defaults), spec.name
        resolve_params(spec.name, {})  # the defaults pass their own limits
        for limit in spec.limits.values():
            assert limit.lab_max is None or limit.lab_max <= limit.hi


def test_registry_choices_are_the_implementations():
    from landscape_lib.analyses.hessian.settings import ENGINES as ANALYSIS_ENGINES
    from landscape_lib.analyses.runners.surfaces import DIRECTIONS
    from landscape_lib.analyses.surface.directions import NORMALIZATIONS
    from landscape_lib.analyses.surface.batchnorm import BN_MODES
    from landscape_lib.analyses.surface.grids import SURFACE_BN_MODES
    from landscape_lib.analyses.surface.memory import PRECISIONS
    from landscape_lib.data.device import SPLITS
    hessian, surface = ANALYSES.get("hessian").limits, ANALYSES.get("surface").limits
    assert hessian["engine"].choices == ANALYSIS_ENGINES
    assert hessian["split"].choices == surface["split"].choices == SPLITS
    assert surface["directions"].choices == DIRECTIONS
    assert surface["normalization"].choices == NORMALIZATIONS
    assert surface["bn"].choices == SURFACE_BN_MODES
    assert ANALYSES.get("interpolation").limits["bn"].choices == ("auto", *BN_MODES)
    assert surface["precision"].choices == PRECISIONS


@pytest.mark.parametrize("table, match", [
    ({"bogus": {}}, "bogus"), ({"hessian": 5}, "hessian"), ({"hessian": {"bogus": 1}}, "bogus"),
    ({"hessian": {"epochs": [99]}}, "99"), ({"hessian": {"epochs": "last"}}, "epochs"),
    ({"surface": {"seeds": "x"}}, "seeds"), ({"hessian": {"tol": math.nan}}, "tol"),
    ({"surface": {"grid": 1000}}, "grid"), ({"surface": {"samples": 0}}, "samples"),
])
def test_scheduled_analyses_are_checked_before_training(table, match):
    with pytest.raises(LandscapeError, match=match):
        check_schedule(table, [0, 1, 2, 4])


def test_a_valid_schedule_passes():
    check_schedule({"hessian": {"epochs": ["first", 2, "last"], "samples": 64},
                    "surface": {"seeds": [0, 1], "grid": 5}}, [0, 1, 2, 4])
