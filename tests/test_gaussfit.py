"""The Gaussian fit constrained to the grid and the paths drawn on it (issue 10 item 4,
acceptance 3) on synthetic surfaces; real ones: test_gaussfit_real.py."""
import numpy as np
import pytest
import torch

from landscape_lib.errors import ConfigError
from landscape_lib.analyses.grid_stats.gaussfit import PARAMS, fit_gaussian, gaussian
from landscape_lib.analyses.paths import gaussian_surface, path_start


def grid(xlim=(-1, 1), ylim=(-1, 1), nx=21, ny=21):
    xs, ys = np.linspace(*xlim, nx), np.linspace(*ylim, ny)
    X, Y = np.meshgrid(xs, ys)  # Z[j, i] at (xs[i], ys[j]), as surface_2d writes it
    return xs, ys, X, Y


def inside(fit):
    return (fit["x_min"] <= fit["x0"] <= fit["x_max"]
            and fit["y_min"] <= fit["y0"] <= fit["y_max"])


@pytest.mark.parametrize("truth", [dict(A=-1.3, x0=0.4, y0=1.1, s1=0.8, s2=1.5, offset=2.0),
                                   dict(A=0.7, x0=-1.0, y0=0.2, s1=0.5, s2=0.9, offset=-0.3),
                                   dict(A=-0.02, x0=0.01, y0=-0.03, s1=0.3, s2=0.6,
                                        offset=0.05)])
def test_exact_on_a_gaussian(truth):
    xs, ys, X, Y = grid((-3, 3), (-2, 4), 41, 35)
    Z = gaussian(X, Y, **truth)
    Z[3, 4] = np.nan  # a diverged point is ignored
    fit = fit_gaussian(xs, ys, Z)
    assert fit["status"] == "ok" and fit["reason"] is None
    for name in PARAMS:
        assert fit[name] == pytest.approx(truth[name], rel=1e-6, abs=1e-9)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("curv, centre", [((1.0, 1.0), (0.0, 0.0)), ((3.0, 0.5), (0.2, -0.3)),
                                          ((50.0, 50.0), (0.0, 0.0))])
def test_a_bowl_is_finite_and_centred_inside(curv, centre):
    xs, ys, X, Y = grid()
    Z = 0.1 + curv[0] * (X - centre[0]) ** 2 + curv[1] * (Y - centre[1]) ** 2
    fit = fit_gaussian(xs, ys, Z)
    assert fit["status"] == "ok", fit["reason"]
    assert all(np.isfinite(fit[k]) for k in PARAMS) and fit["A"] < 0
    assert fit["x0"] == pytest.approx(centre[0], abs=0.05)
    assert fit["y0"] == pytest.approx(centre[1], abs=0.05)
    assert 0.1 <= fit["s1"] <= 4.0 and 0.1 <= fit["s2"] <= 4.0  # one step .. 2 x extent
    assert fit["r2"] > 0.95


def test_a_bowl_wider_than_the_grid_says_so():
    xs, ys, X, Y = grid()
    fit = fit_gaussian(xs, ys, X ** 2 + Y ** 2)
    assert fit["status"] == "ok" and "upper bound" in fit["reason"]
    assert fit["s1"] == pytest.approx(4.0) and fit["A"] < -10  # paraboloid: lower bound on |A|


def test_a_slope_fails_with_the_centre_off_the_grid():
    xs, ys, X, Y = grid()
    Z = 1.0 + 0.5 * (X + 1.2) ** 2 + 0.5 * (Y - 1.5) ** 2  # minimum outside the grid
    fit = fit_gaussian(xs, ys, Z)
    assert fit["status"] == "failed" and "edge" in fit["reason"]
    assert all(fit[k] is None for k in PARAMS) and fit["r2"] is None


def test_flat_saddle_and_too_few_points_fail_with_reasons():
    xs, ys, X, Y = grid((-2, 2), (-2, 2))
    assert "flat" in fit_gaussian(xs, ys, np.full(X.shape, 0.7))["reason"]
    saddle = fit_gaussian(xs, ys, X ** 2 - Y ** 2)
    assert saddle["status"] == "failed" and saddle["reason"]
    Z = np.full(X.shape, np.nan)
    Z[:2, :3] = 1.0
    assert "finite" in fit_gaussian(xs, ys, Z)["reason"]
    Z = X ** 2 + Y ** 2
    Z[8:13, 8:13] = np.nan  # the centre diverged: no sign to read
    assert "centre" in fit_gaussian(xs, ys, Z)["reason"]
    with pytest.raises(ConfigError):
        fit_gaussian(xs[:-1], ys, X)


@pytest.mark.parametrize("centre", [(0.0, 0.0), (0.9, -0.95), (-0.99, 0.5)])
def test_paths_start_inside_the_grid_one_width_from_the_centre(centre):
    xs, ys, X, Y = grid()
    truth = dict(A=-1.0, x0=centre[0], y0=centre[1], s1=0.3, s2=1.5, offset=1.0)
    fit = fit_gaussian(xs, ys, gaussian(X, Y, **truth))
    x, y = path_start(fit)
    assert -1 <= x <= 1 and -1 <= y <= 1
    assert abs(x - fit["x0"]) == pytest.approx(0.3, abs=1e-6)  # room for one width
    assert (x, y) != (fit["x0"], fit["y0"])
    with pytest.raises(ConfigError, match="outside"):
        path_start(fit, start=[1.5, 0.0])
    assert path_start(fit, start=[0.5, 0.5]) == (0.5, 0.5)


def test_failed_fits_have_no_paths_and_the_surface_matches_numpy():
    xs, ys, X, Y = grid()
    with pytest.raises(ConfigError, match="failed"):
        path_start(fit_gaussian(xs, ys, np.ones_like(X)))
    with pytest.raises(ConfigError, match="again"):  # a row stored before fits had a status
        path_start({k: 0.5 for k in (*PARAMS, "x_min", "x_max", "y_min", "y_max")})
    p = dict(A=-2.0, x0=0.5, y0=-0.5, s1=1.0, s2=0.4, offset=1.0)
    xy = torch.tensor([[0.3, -0.7], [1.0, 2.0]], dtype=torch.float64)
    np.testing.assert_allclose(gaussian_surface(p)(xy).numpy(),
                               gaussian(xy[:, 0].numpy(), xy[:, 1].numpy(), **p), rtol=1e-14)
