"""SAM's second (perturbed) pass leaves BatchNorm running statistics alone (issue 10 item 6,
acceptance 5a)."""
import copy

import pytest
import torch
from torch import nn

from landscape_lib.models import create_model
from landscape_lib.optim import create_optimizer, get_spec, optimizer_step


def bn_buffers(model):
    return {n: b.clone() for n, b in model.named_buffers()
            if n.endswith(("running_mean", "running_var"))}


def setup(name, seed=0):
    torch.manual_seed(seed)
    model = create_model("cnn", in_channels=1, image_size=8, num_classes=10, widths=[8, 16])
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    spec = get_spec(name)
    opt = create_optimizer(name, model.parameters(), lr=0.05)

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return model, x, spec, opt, closure


@pytest.mark.parametrize("name", ["sam-adam", "sam-sgd-momentum"])
def test_after_one_sam_step_bn_statistics_are_those_of_one_forward_pass(name):
    model, x, spec, opt, closure = setup(name)
    reference = copy.deepcopy(model).train()
    with torch.no_grad():
        reference(x)  # one train-mode pass at the original weights
    model.train()
    optimizer_step(opt, spec, closure, model=model)
    ours, ref = bn_buffers(model), bn_buffers(reference)
    assert ours.keys() == ref.keys() and len(ours) == 4
    for key in ref:
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-6, atol=1e-7)
    # momentum is given back
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("name", ["sam-adam", "sam-sgd-momentum"])
def test_the_weight_update_is_unchanged_and_without_model_bn_is_updated_twice(name):
    """Train-mode BN does not read the running statistics, so freezing them changes no weight;
    a step that is not given the model (the old behaviour) updates them in both passes."""
    ours, x, spec, opt, closure = setup(name)
    theirs, _, _, opt2, closure2 = setup(name)
    ours.train(), theirs.train()
    optimizer_step(opt, spec, closure, model=ours)
    optimizer_step(opt2, spec, closure2)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    a, b = bn_buffers(ours), bn_buffers(theirs)
    assert any((a[k] - b[k]).abs().max() > 1e-4 for k in a)


def test_the_engine_passes_its_model(monkeypatch, store):
    """A SAM run of a BN net trained by the engine freezes the statistics in its second pass."""
    from conftest import tiny_config
    from landscape_lib.train import engine
    seen = []
    real = engine.optimizer_step
    monkeypatch.setattr(engine, "optimizer_step",
                        lambda *a, **k: seen.append(k.get("model")) or real(*a, **k))
    cfg = tiny_config(arch="cnn", arch_options={"widths": [4]}, optimizer="sam-sgd", epochs=1)
    assert engine.train_run(cfg, store, device="cpu", progress=False) == "finished"
    assert seen and all(isinstance(m, nn.Module) and any(
        isinstance(b, nn.BatchNorm2d) for b in m.modules()) for m in seen)


def test_momentum_none_is_restored_and_plain_optimizers_ignore_model():
    model, x, spec, opt, closure = setup("sam-adam")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    optimizer_step(opt, spec, closure, model=model)
    assert all(m.momentum is None for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    model, x, spec, opt, closure = setup("adam")
    before = bn_buffers(copy.deepcopy(model).train().requires_grad_(False))
    model.train()
    optimizer_step(opt, spec, closure, model=model)
    assert any((bn_buffers(model)[k] - before[k]).abs().max() > 0 for k in before)
