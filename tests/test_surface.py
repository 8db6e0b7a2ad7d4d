"""Loss-surface directions, 1-D interpolation and 2-D surfaces on tiny CPU models.

Expected values come from an independent computation: a deep copy of the model with the weights
loaded by ``torch.nn.utils.vector_to_parameters`` and the loss of all data in one call.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from landscape_lib.analyses.grid_stats.summary import surface_summary
from landscape_lib.analyses.surface import memory as surface_mod
from landscape_lib.analyses.surface.directions import (
    eigenvector_directions, get_weights, pca_directions, random_direction, random_directions,
    set_weights)
from landscape_lib.analyses.surface.grids import interpolate_1d, surface_2d, surface_2d_loop
from landscape_lib.analyses.surface.memory import (
    activation_numel_per_sample, estimate_surface_memory)
from landscape_lib.params import flatten
from landscape_lib.errors import ConfigError


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def bn_cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model.train()  # give the running statistics non-default values
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 2, 6, 6) * 2 + 0.5)
    return model.eval()


def data(kind, n=40, batch=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 8) if kind == "mlp" else (n, 2, 6, 6)
    X = torch.randn(shape, generator=g)
    Y = torch.randint(0, 3, (n,), generator=g)
    return X, Y, [(X[i:i + batch], Y[i:i + batch]) for i in range(0, n, batch)]


MODELS = {"mlp": mlp, "bn_cnn": bn_cnn}


def direct(model, flat, X, Y):
    """Loss and accuracy of ``model`` with weights ``flat``, all data at once (eval mode)."""
    m = copy.deepcopy(model).eval()
    vector_to_parameters(flat.clone(), m.parameters())
    with torch.no_grad():
        out = m(X)
    return F.cross_entropy(out, Y).item(), (out.argmax(1) == Y).float().mean().item()


def direct_recomputed(model, flat, X, Y, bn_batches):
    """Same, after recomputing BN statistics as a plain average over ``bn_batches``."""
    m = copy.deepcopy(model)
    vector_to_parameters(flat.clone(), m.parameters())
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        for xb, _ in bn_batches:
            m(xb)
    return direct(m, flat, X, Y)


# ----------------------------------------------------------------------------- directions

def test_filter_normalization_matches_weight_filter_norms():
    model = bn_cnn()
    d = random_direction(model, seed=3)
    for di, p in zip(d, model.parameters()):
        if p.dim() > 1:
            torch.testing.assert_close(di.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
        else:
            assert torch.count_nonzero(di) == 0


def test_ignore_1d_false_keeps_and_normalizes_1d_params():
    model = bn_cnn()
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([0.5, -0.2, 0.1, 1.0]))  # BN biases start at zero
    d = random_direction(model, seed=3, ignore_1d=False)
    for di, p in zip(d, model.parameters()):
        if p.dim() == 1:
            assert torch.count_nonzero(di) == di.numel()
            torch.testing.assert_close(di.abs(), p.detach().abs())


def test_layer_normalization_and_seeds():
    model = mlp()
    d = random_direction(model, seed=5, normalization="layer")
    for di, p in zip(d, model.parameters()):
        if p.dim() > 1:
            torch.testing.assert_close(di.norm(), p.detach().norm())
    same = random_direction(model, seed=5, normalization="layer")
    other = random_direction(model, seed=6, normalization="layer")
    assert all(torch.equal(a, b) for a, b in zip(d, same))
    assert not torch.allclose(flatten(d), flatten(other))
    first, second = random_directions(model, seed=5, count=2, normalization="layer")
    assert all(torch.equal(a, b) for a, b in zip(first, d))
    assert not torch.allclose(flatten(first), flatten(second))
    with pytest.raises(ConfigError, match="normalization"):
        random_direction(model, seed=0, normalization="batch")


def test_set_get_weights_roundtrip():
    model = mlp()
    w = get_weights(model)
    vec = torch.randn(sum(p.numel() for p in model.parameters()))
    set_weights(model, vec)
    torch.testing.assert_close(parameters_to_vector(model.parameters()).detach(), vec)
    set_weights(model, w)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), w))
    with pytest.raises(ConfigError, match="entries"):
        set_weights(model, vec[:-1])


def test_eigenvector_directions_selects_pair_and_skips_frozen():
    model = mlp()
    P = sum(p.numel() for p in model.parameters())
    vecs = torch.randn(3, P)
    d1, d2 = eigenvector_directions(vecs, model, pair=(2, 0))
    torch.testing.assert_close(flatten(d1), vecs[2])
    torch.testing.assert_close(flatten(d2), vecs[0])
    model[1].bias.requires_grad_(False)
    trainable = P - model[1].bias.numel()
    vecs = torch.randn(2, trainable)
    d1, _ = eigenvector_directions(vecs, model)
    assert torch.count_nonzero(d1[1]) == 0
    torch.testing.assert_close(torch.cat([d1[0].flatten(), *[t.flatten() for t in d1[2:]]]),
                               vecs[0])
    with pytest.raises(ConfigError, match="pair"):
        eigenvector_directions(vecs, model, pair=(0, 5))


def test_pca_directions_recover_a_planar_trajectory():
    g = torch.Generator().manual_seed(0)
    P, E = 30, 7
    basis, _ = torch.linalg.qr(torch.randn(P, 2, generator=g, dtype=torch.float64))
    center = torch.randn(P, generator=g, dtype=torch.float64)
    ab = torch.randn(E, 2, generator=g, dtype=torch.float64)
    ab[-1] = 0  # the last checkpoint is the centre, as in Li et al.
    W = center + ab @ basis.T
    d1, d2, ratio, coords = pca_directions(W, center)
    D = torch.stack([d1, d2])
    torch.testing.assert_close(D @ D.T, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(center + torch.as_tensor(coords) @ D, W)
    # the plane found is the plane the trajectory lies in
    torch.testing.assert_close(D.T - basis @ (basis.T @ D.T), torch.zeros(P, 2, dtype=D.dtype))
    expected = PCA(n_components=2).fit(W.numpy() - center.numpy()).explained_variance_ratio_
    np.testing.assert_allclose(ratio, expected, rtol=1e-10)
    assert ratio.sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- interpolation

@pytest.mark.parametrize("kind", ["mlp", "bn_cnn"])
def test_interpolation_matches_independent_losses(kind):
    model, other = MODELS[kind](0), MODELS[kind](1)
    X, Y, batches = data(kind)
    w1, w2 = parameters_to_vector(model.parameters()), parameters_to_vector(other.parameters())
    alphas = [-0.5, 0.0, 0.5, 1.0, 1.5]
    df = interpolate_1d(model, get_weights(model), get_weights(other), alphas, batches,
                        bn="fixed")  # the reference keeps the model's statistics
    assert list(df.columns) == ["alpha", "loss", "acc", "bn", "bn_var_clamped"]
    for row in df.itertuples():
        loss, acc = direct(model, ((1 - row.alpha) * w1 + row.alpha * w2).detach(), X, Y)
        assert row.loss == pytest.approx(loss, abs=1e-5)
        assert row.acc == pytest.approx(acc)
    # the end points are the two models' own losses
    assert df.loss.iloc[1] == pytest.approx(direct(model, w1.detach(), X, Y)[0], abs=1e-5)
    assert df.loss.iloc[3] == pytest.approx(direct(model, w2.detach(), X, Y)[0], abs=1e-5)


# ----------------------------------------------------------------------------- 2-D surfaces

@pytest.mark.parametrize("kind", ["mlp", "bn_cnn"])
@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_surface_points_match_independent_losses(kind, method):
    model = MODELS[kind]()
    X, Y, batches = data(kind)
    before = copy.deepcopy(model.state_dict())
    d1, d2 = random_directions(model, seed=0, count=2)
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    res = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, method=method)
    assert res["loss"].shape == (3, 5) and res["method"] == method and res["bn"] == "fixed"
    c = parameters_to_vector(model.parameters()).detach()
    assert res["loss"][1, 2] == pytest.approx(direct(model, c, X, Y)[0], abs=1e-5)
    for j, i in [(0, 0), (2, 3)]:
        w = c + xs[i] * flatten(d1) + ys[j] * flatten(d2)
        loss, acc = direct(model, w, X, Y)
        assert res["loss"][j, i] == pytest.approx(loss, abs=1e-5)
        assert res["acc"][j, i] == pytest.approx(acc)
    for k, v in model.state_dict().items():  # the model is left as it was
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("kind", ["mlp", "bn_cnn"])
def test_fast_surface_matches_loop_reference(kind):
    model = MODELS[kind]()
    _, _, batches = data(kind)
    d1, d2 = random_directions(model, seed=1, count=2)
    xs, ys = np.linspace(-1, 1, 6), np.linspace(-1, 1, 4)
    ref = surface_2d_loop(model, get_weights(model), d1, d2, xs, ys, batches)
    fast = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, method="vmap",
                      points_per_chunk=7)
    np.testing.assert_allclose(fast["loss"], ref["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast["acc"], ref["acc"])


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_bf16_and_channels_last_stay_close_to_fp32(method):
    model = bn_cnn()
    _, _, batches = data("bn_cnn")
    d1, d2 = random_directions(model, seed=1, count=2)
    xs = ys = np.linspace(-0.5, 0.5, 3)
    ref = surface_2d_loop(model, get_weights(model), d1, d2, xs, ys, batches)["loss"]
    low = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, method=method,
                     precision="bf16", channels_last=True)
    assert low["precision"] == "bf16"
    np.testing.assert_allclose(low["loss"], ref, rtol=2e-2)  # bf16 keeps ~3 digits
    exact = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, method=method,
                       channels_last=True)
    np.testing.assert_allclose(exact["loss"], ref, rtol=1e-5)


class ItemNet(nn.Module):
    """A model whose forward reads a weight with .item(): it has no vmap rule."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 3)

    def forward(self, x):
        return self.lin(x) * (1.0 if self.lin.weight.sum().item() < 1e9 else 0.0)


def test_auto_falls_back_to_the_loop_when_vmap_does_not_apply():
    torch.manual_seed(0)
    model = ItemNet()
    _, _, batches = data("mlp")
    d1, d2 = random_directions(model, seed=0, count=2)
    xs = ys = np.linspace(-1, 1, 3)
    res = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches)
    ref = surface_2d_loop(model, get_weights(model), d1, d2, xs, ys, batches)
    assert res["method"] == "loop"
    np.testing.assert_allclose(res["loss"], ref["loss"], rtol=1e-5)


def test_bn_recompute_matches_independent_recomputation():
    model = bn_cnn()
    X, Y, batches = data("bn_cnn")
    _, _, train_batches = data("bn_cnn", n=32, seed=7)
    before = copy.deepcopy(model.state_dict())
    d1, d2 = random_directions(model, seed=2, count=2)
    xs, ys = [0.0, 0.5], [0.0]
    rec = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, bn="recompute",
                     bn_batches=train_batches)
    fixed = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, bn="fixed")
    ref = surface_2d_loop(model, get_weights(model), d1, d2, xs, ys, batches, bn="recompute",
                          bn_batches=train_batches)
    c = parameters_to_vector(model.parameters()).detach()
    for i, x in enumerate(xs):
        w = c + x * flatten(d1)
        assert rec["loss"][0, i] == pytest.approx(
            direct_recomputed(model, w, X, Y, train_batches)[0], abs=1e-5)
        assert fixed["loss"][0, i] == pytest.approx(direct(model, w, X, Y)[0], abs=1e-5)
    np.testing.assert_allclose(rec["loss"], ref["loss"], rtol=1e-5)
    assert rec["bn"] == "recompute" and rec["method"] == "loop"
    # recomputed statistics change the loss; the model's own statistics are untouched
    assert abs(rec["loss"][0, 1] - fixed["loss"][0, 1]) > 1e-4
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_on_row_called_once_per_row_and_start_row_resumes():
    model = mlp()
    _, _, batches = data("mlp")
    d1, d2 = random_directions(model, seed=4, count=2)
    xs, ys = np.linspace(-1, 1, 3), np.linspace(-1, 1, 4)
    calls = []
    full = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, method="vmap",
                      points_per_chunk=5, on_row=lambda j, l, a: calls.append((j, l, a)))
    assert [j for j, _, _ in calls] == [0, 1, 2, 3]
    for j, l, a in calls:
        np.testing.assert_array_equal(l, full["loss"][j])
        np.testing.assert_array_equal(a, full["acc"][j])

    forwards = []
    handle = model.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
    resumed_calls = []
    resumed = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, method="loop",
                         start_row=2, on_row=lambda j, l, a: resumed_calls.append(j))
    handle.remove()
    assert resumed_calls == [2, 3]
    assert np.isnan(resumed["loss"][:2]).all()
    np.testing.assert_allclose(resumed["loss"][2:], full["loss"][2:], rtol=1e-6)
    # only the 2 remaining rows x 3 points were evaluated, each over the 3 batches
    assert len([b for b in forwards if b > 1]) == 2 * 3 * len(batches)


def test_too_large_grid_raises_before_any_evaluation(monkeypatch):
    model = mlp()
    X, _, batches = data("mlp")
    d1, d2 = random_directions(model, seed=0, count=2)
    need = estimate_surface_memory(model, 16, 9, X)
    real_inputs = []
    model.register_forward_hook(
        lambda m, i, o: real_inputs.append(1) if i[0].device.type != "meta" else None)
    rows = []
    monkeypatch.setattr(surface_mod, "available_memory", lambda device: need - 1)
    with pytest.raises(ConfigError, match="grid too large for memory"):
        surface_2d(model, get_weights(model), d1, d2, np.zeros(3), np.zeros(3), batches,
                   method="vmap", points_per_chunk=9, on_row=lambda *a: rows.append(a))
    assert real_inputs == [] and rows == []
    monkeypatch.setattr(surface_mod, "available_memory", lambda device: need)
    res = surface_2d(model, get_weights(model), d1, d2, np.zeros(3), np.zeros(3), batches,
                     method="vmap", points_per_chunk=9)
    assert np.isfinite(res["loss"]).all()


def test_activation_size_probe_counts_the_largest_module():
    # Flatten 8+8, Linear 8+16, ReLU 16+16, Linear 16+3, whole net 8+3: largest is 32.
    assert activation_numel_per_sample(mlp(), torch.randn(5, 8)) == 32


def test_bad_options_raise_config_error():
    model = bn_cnn()
    _, _, batches = data("bn_cnn")
    d1, d2 = random_directions(model, seed=0, count=2)
    c = get_weights(model)
    for kwargs, match in [(dict(bn="running"), "bn="), (dict(precision="fp16"), "precision="),
                          (dict(method="jit"), "method="), (dict(start_row=9), "start_row"),
                          (dict(method="vmap", bn="recompute"), "recompute"),
                          (dict(method="graph", bn="recompute"), "recompute"),
                          (dict(method="graph"), "needs a CUDA device")]:
        with pytest.raises(ConfigError, match=match):
            surface_2d(model, c, d1, d2, [0.0], [0.0], batches, **kwargs)


# ----------------------------------------------------------------------------- summaries

def test_surface_summary_on_a_quadratic_bowl():
    xs = np.array([-0.5, -0.2, 0.0, 0.3, 0.4])  # uneven spacing on purpose
    ys = np.linspace(-2, 2, 41)
    a, b = 2.0, 0.5
    X, Y = np.meshgrid(xs, ys)
    s = surface_summary(xs, ys, 0.3 + a * X ** 2 + b * Y ** 2)
    assert s["center_loss"] == pytest.approx(0.3)
    assert s["curvature_x"] == pytest.approx(2 * a)
    assert s["curvature_y"] == pytest.approx(2 * b)


def test_basin_width_on_a_cone():
    xs, ys = np.linspace(-1, 1, 21), np.linspace(-2, 2, 41)
    X, Y = np.meshgrid(xs, ys)
    Z = 0.3 + 2 * np.abs(X) + 0.5 * np.abs(Y)  # rises by 0.1 at |x| = 0.05 and |y| = 0.2
    s = surface_summary(xs, ys, Z, threshold=0.1)
    assert s["basin_width"] == pytest.approx((0.05 + 0.05 + 0.2 + 0.2) / 4)
    assert s["basin_width_censored"] == 0
    wide = surface_summary(xs, ys, Z, threshold=100.0)  # never left: distances to the edges
    assert wide["basin_width"] == pytest.approx((1 + 1 + 2 + 2) / 4)
    assert wide["basin_width_censored"] == 4
