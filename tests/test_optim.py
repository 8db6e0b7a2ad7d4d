"""Optimizer registry: every entry trains a fixed least-squares problem; settings reach it."""
import pytest
import torch
from torch import nn

from landscape_lib.errors import ConfigError, UnknownNameError
from landscape_lib.optim import OPTIMIZERS, create_optimizer, get_spec, optimizer_step

BASES = ["sgd", "sgd-momentum", "adagrad", "rmsprop", "adam", "adamw", "lion", "sophia",
         "adafactor", "lamb"]

# Learning rates (and extra options) that suit this problem; Sophia's default element-wise
# clip p=0.01 limits each step to lr * p, too slow for 150 steps, so it is widened here.
SETTINGS = {
    "sgd": dict(lr=0.1), "sgd-momentum": dict(lr=0.03), "adagrad": dict(lr=0.3),
    "rmsprop": dict(lr=0.03), "adam": dict(lr=0.1), "adamw": dict(lr=0.1),
    "lion": dict(lr=0.03), "sophia": dict(lr=0.3, p=0.1), "adafactor": dict(lr=0.1),
    "lamb": dict(lr=0.03),
}
SAM_NAMES = ["sam-" + b for b in BASES if b != "sophia"]
STEPS = 150


def _problem():
    """Least squares y = X w* + 0.5 with a well-conditioned X (cond(X^T X) ~ 3)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 10, generator=g)
    y = x @ torch.randn(10, 1, generator=g) + 0.5
    torch.manual_seed(1)
    return nn.Linear(10, 1), x, y


def _closure(model, opt, spec, x, y, calls=None):
    def closure():
        if calls is not None:
            calls.append(1)
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward(create_graph=spec.create_graph)
        return loss
    return closure


def _train(name, steps=STEPS, **settings):
    model, x, y = _problem()
    spec = get_spec(name)
    opt = create_optimizer(name, model.parameters(), **settings)
    calls = []
    closure = _closure(model, opt, spec, x, y, calls)
    losses = [optimizer_step(opt, spec, closure) for _ in range(steps)]
    with torch.no_grad():
        final = ((model(x) - y) ** 2).mean().item()
    return losses, final, len(calls), model, opt


def test_registry_names():
    assert OPTIMIZERS.names() == BASES
    assert "sam-adam" in OPTIMIZERS and "sam-sgd-momentum" in OPTIMIZERS
    assert OPTIMIZERS.entry("adam").doc.startswith("Adam")


@pytest.mark.parametrize("name", BASES + SAM_NAMES)
def test_every_optimizer_reduces_least_squares(name):
    base = name.removeprefix("sam-")
    losses, final, calls, *_ = _train(name, **SETTINGS[base])
    assert losses[0].item() > 5.0  # the start is far from the optimum (loss 0)
    assert final < losses[0].item() / 100
    assert calls == (2 if name.startswith("sam-") else 1) * STEPS


def test_returned_loss_is_first_pass_at_current_weights():
    model, x, y = _problem()
    spec = get_spec("sam-adam")
    opt = create_optimizer("sam-adam", model.parameters(), lr=0.1, rho=0.5)
    with torch.no_grad():
        expected = ((model(x) - y) ** 2).mean()
    loss = optimizer_step(opt, spec, _closure(model, opt, spec, x, y))
    assert not loss.requires_grad
    assert torch.allclose(loss, expected)


def test_sam_sgd_step_matches_formula():
    """w1 = w0 - lr * grad L(w0 + rho * g0 / ||g0||), the norm taken over all parameters."""
    model, x, y = _problem()
    lr, rho = 0.05, 0.3
    w0, b0 = model.weight.detach().clone().T, model.bias.detach().clone()

    def grads(w, b):  # d/dw, d/db of mean((x w + b - y)^2), by hand
        r = x @ w + b - y
        return 2 * x.T @ r / len(x), 2 * r.mean(0)

    gw, gb = grads(w0, b0)
    norm = torch.sqrt(gw.square().sum() + gb.square().sum())
    hw, hb = grads(w0 + rho * gw / norm, b0 + rho * gb / norm)

    spec = get_spec("sam-sgd")
    opt = create_optimizer("sam-sgd", model.parameters(), lr=lr, rho=rho)
    optimizer_step(opt, spec, _closure(model, opt, spec, x, y))
    assert torch.allclose(model.weight.detach().T, w0 - lr * hw, atol=1e-6)
    assert torch.allclose(model.bias.detach(), b0 - lr * hb, atol=1e-6)


def test_sam_rho_default():
    model, *_ = _problem()
    opt = create_optimizer("sam-sgd-momentum", model.parameters(), lr=0.1)
    assert opt.param_groups[0]["rho"] == 0.05
    assert opt.param_groups[0]["momentum"] == 0.9


def test_sophia_keeps_graph_for_hessian_and_frees_it_after_the_step():
    spec = get_spec("sophia")
    assert spec.create_graph and not spec.needs_closure
    _, _, _, model, opt = _train("sophia", steps=1, lr=0.1)
    assert all(p.grad.grad_fn is None for p in model.parameters())
    hess = opt.state[model.weight]["hessian"]
    assert torch.isfinite(hess).all() and hess.abs().sum() > 0


@pytest.mark.parametrize("name,betas", [("adam", (0.8, 0.999)), ("adamw", (0.8, 0.999)),
                                        ("lion", (0.8, 0.99)), ("sophia", (0.8, 0.99)),
                                        ("lamb", (0.8, 0.999)), ("sam-adam", (0.8, 0.999))])
def test_momentum_reaches_first_beta(name, betas):
    model, *_ = _problem()
    opt = create_optimizer(name, model.parameters(), lr=0.1, momentum=0.8)
    assert tuple(opt.param_groups[0]["betas"]) == betas


def test_momentum_only_where_it_belongs():
    params = list(_problem()[0].parameters())
    assert create_optimizer("sgd-momentum", params, lr=0.1, momentum=0.7
                            ).param_groups[0]["momentum"] == 0.7
    assert create_optimizer("sgd", params, lr=0.1, momentum=0.7).param_groups[0]["momentum"] == 0
    assert create_optimizer("rmsprop", params, lr=0.1).param_groups[0]["momentum"] == 0
    # An explicit betas replaces the momentum mapping.
    adam = create_optimizer("adam", params, lr=0.1, momentum=0.7, betas=(0.5, 0.6))
    assert adam.param_groups[0]["betas"] == (0.5, 0.6)


def test_common_settings_reach_every_optimizer():
    params = list(_problem()[0].parameters())
    for name in BASES + ["sam-lamb"]:
        group = create_optimizer(name, params, lr=0.02, weight_decay=0.01).param_groups[0]
        assert group["lr"] == 0.02 and group["weight_decay"] == 0.01, name


def test_kwargs_not_accepted_are_dropped():
    params = list(_problem()[0].parameters())
    sgd = create_optimizer("sgd", params, lr=0.1, betas=(0.5, 0.9), rho=0.2, p=0.1)
    assert not {"betas", "rho", "p"} & set(sgd.param_groups[0])
    adam = create_optimizer("adam", params, lr=0.1, nesterov=True, amsgrad=True)
    assert "nesterov" not in adam.param_groups[0] and adam.param_groups[0]["amsgrad"] is True


def test_kwarg_no_optimizer_takes_is_a_config_error():
    params = list(_problem()[0].parameters())
    with pytest.raises(ConfigError, match="betaz"):
        create_optimizer("adam", params, lr=0.1, betaz=(0.9, 0.99))


@pytest.mark.parametrize("name,hint", [("adamm", "adam"), ("sam-adamm", "sam-adam"),
                                       ("sgd_momentum", "sgd-momentum")])
def test_unknown_name_suggests(name, hint):
    with pytest.raises(UnknownNameError, match=f"did you mean.*{hint}"):
        get_spec(name)


@pytest.mark.parametrize("name", ["sam-sophia", "sam-sam-adam", "sam-"])
def test_sam_bases_that_are_not_allowed(name):
    assert name not in OPTIMIZERS
    with pytest.raises(UnknownNameError, match="SAM wraps one of"):
        create_optimizer(name, list(_problem()[0].parameters()), lr=0.1)
