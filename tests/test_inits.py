"""Initializers against their formulas (docs/studies.md, section E), fans computed by hand here."""
import math

import pytest
import torch
from torch import nn

from landscape_lib.errors import ConfigError, UnknownNameError
from landscape_lib.inits import INITIALIZERS, init_model_, initializer_options

# (layer, fan_in, fan_out) with fans written out from the shapes, not taken from torch.
LINEAR = (lambda: nn.Linear(768, 512), 768, 512)
CONV = (lambda: nn.Conv2d(48, 96, kernel_size=(3, 5)), 48 * 15, 96 * 15)
LAYERS = {"linear": LINEAR, "conv": CONV}

STD_FORMULAS = {
    "lecun": lambda fi, fo: math.sqrt(1 / fi),
    "xavier": lambda fi, fo: math.sqrt(2 / (fi + fo)),
    "kaiming": lambda fi, fo: math.sqrt(2 / fi),
    # A single layer: depth 1, nu = 1/sqrt(n_in).
    "emergence": lambda fi, fo: math.sqrt(2 / fi) / math.sqrt(fi),
}


def _init(make, name, seed=0, **kw):
    torch.manual_seed(123)  # PyTorch's own init, identical for every call
    layer = make()
    torch.manual_seed(seed)
    init_model_(layer, name, **kw)
    return layer


def _flat(w):
    return w.detach().reshape(w.shape[0], -1).double()


def test_registry_holds_every_initializer():
    assert set(INITIALIZERS.names()) == {
        "default", "lecun", "xavier", "kaiming", "orthogonal", "scaled-orthogonal",
        "l-momentum", "emergence"}


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("name", STD_FORMULAS)
def test_gaussian_std_matches_formula(name, kind):
    make, fan_in, fan_out = LAYERS[kind]
    w = _init(make, name).weight.detach()
    expected = STD_FORMULAS[name](fan_in, fan_out)
    assert w.std().item() == pytest.approx(expected, rel=0.03)
    assert abs(w.mean().item()) < 0.03 * expected
    # Gaussian, not uniform: kurtosis 3 (a uniform draw would give 1.8).
    z = (w - w.mean()) / w.std()
    assert (z ** 4).mean().item() == pytest.approx(3.0, abs=0.15)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("name,gain", [("orthogonal", 1.0), ("scaled-orthogonal", 0.5)])
def test_orthogonal_rows_or_columns(name, gain, kind):
    w = _flat(_init(LAYERS[kind][0], name).weight)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    assert torch.allclose(gram, gain ** 2 * eye, atol=1e-5)


def test_orthogonal_tall_matrix_has_orthonormal_columns():
    w = _flat(_init(lambda: nn.Linear(64, 200), "orthogonal").weight)  # 200 x 64
    assert torch.allclose(w.T @ w, torch.eye(64, dtype=w.dtype), atol=1e-5)


def test_scaled_orthogonal_gain_option():
    w = _flat(_init(lambda: nn.Linear(300, 100), "scaled-orthogonal", gain=2.0).weight)
    assert torch.allclose(w @ w.T, 4.0 * torch.eye(100, dtype=w.dtype), atol=1e-4)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_l_momentum_variance_is_momentum_squared(kind, momentum):
    w = _init(LAYERS[kind][0], "l-momentum", momentum=momentum).weight.detach().double()
    assert w.var(correction=0).item() == pytest.approx(momentum ** 2, rel=1e-5)
    # Still a uniform draw: the largest entry sits at sqrt(3) standard deviations.
    assert w.abs().max().item() == pytest.approx(math.sqrt(3) * momentum, rel=0.01)


def test_emergence_std_per_layer_of_a_three_layer_mlp():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 384), nn.ReLU(),
                        nn.Linear(384, 256))
    init_model_(mlp, "emergence")
    layers = [mlp[0], mlp[2], mlp[4]]
    for l, (layer, n_in) in enumerate(zip(layers, [256, 512, 384]), start=1):
        nu = (1 / math.sqrt(n_in)) * (1 + math.log(l) / math.log(3))
        assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / n_in) * nu, rel=0.03)


def test_emergence_numbers_conv_and_linear_layers_together():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(32, 64, 3), nn.Flatten(), nn.Linear(1024, 256))
    init_model_(net, "emergence")
    conv_std = math.sqrt(2 / 288) / math.sqrt(288)                      # layer 1 of 2
    lin_std = math.sqrt(2 / 1024) / math.sqrt(1024) * (1 + math.log(2) / math.log(2))
    assert net[0].weight.std().item() == pytest.approx(conv_std, rel=0.03)
    assert net[2].weight.std().item() == pytest.approx(lin_std, rel=0.03)


@pytest.mark.parametrize("name", [n for n in INITIALIZERS.names() if n != "default"])
def test_biases_zeroed_and_norm_layers_untouched(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(4, 8, 3), nn.BatchNorm1d(8), nn.Flatten(),
                        nn.Linear(48, 16), nn.LayerNorm(16))
    with torch.no_grad():  # non-default norm parameters, to see that they are kept
        for norm in (net[1], net[4]):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-1, 1)
    norms_before = [p.clone() for m in (net[1], net[4]) for p in m.parameters()]
    init_model_(net, name)
    assert torch.count_nonzero(net[0].bias) == 0 and torch.count_nonzero(net[3].bias) == 0
    assert torch.count_nonzero(net[0].weight) > 0
    norms_after = [p for m in (net[1], net[4]) for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(norms_before, norms_after))


def test_default_leaves_weights_and_biases_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 20), nn.Conv1d(2, 3, 3))
    before = [p.clone() for p in net.parameters()]
    init_model_(net, "default")
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("name", [n for n in INITIALIZERS.names() if n != "default"])
def test_same_seed_same_weights(name):
    a = _init(LINEAR[0], name, seed=7).weight
    b = _init(LINEAR[0], name, seed=7).weight
    c = _init(LINEAR[0], name, seed=8).weight
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_argument_seeds_without_touching_global_rng():
    layers = [nn.Linear(30, 40) for _ in range(2)]
    state = torch.get_rng_state()
    for layer in layers:
        init_model_(layer, "l-momentum", generator=torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(layers[0].weight, layers[1].weight)


def test_bad_option_is_a_config_error_listing_accepted_ones():
    with pytest.raises(ConfigError, match="gain"):
        init_model_(nn.Linear(3, 3), "scaled-orthogonal", gian=0.1)
    with pytest.raises(ConfigError, match="accepted: none"):
        init_model_(nn.Linear(3, 3), "kaiming", gain=0.1)


def test_unknown_initializer_suggests_a_name():
    with pytest.raises(UnknownNameError, match="kaiming"):
        init_model_(nn.Linear(3, 3), "kaimin")


def test_initializer_options_lists_defaults():
    assert initializer_options("scaled-orthogonal") == {"gain": 0.5}
    assert initializer_options("xavier") == {}
    assert initializer_options("emergence") == {}
