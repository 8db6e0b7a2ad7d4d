"""One surface split over several devices equals the one-device surface (issue 13).

Two CPU "devices" (one thread each, the second on a deep copy of the model) stand in for two
GPUs: the split, the per-device copies, the in-order row hand-over and the failure path are the
same code. References: the library's one-device ``surface_2d`` and the plain point-by-point
``surface_2d_loop``; hard cases: odd, non-square grids, BatchNorm nets with fixed and recomputed
statistics, a ResNet, a resumed grid, a diverged (NaN) row; and the stored analysis, whose id
and rows do not depend on the devices.
"""
import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_config
from landscape_lib.analyses import provenance
from landscape_lib.analyses.provenance import run_analysis
from landscape_lib.analyses.surface.devices import row_blocks, surface_2d_multi
from landscape_lib.analyses.surface.directions import get_weights, random_directions
from landscape_lib.analyses.surface.grids import surface_2d, surface_2d_loop
from landscape_lib.errors import ConfigError
from landscape_lib.models import create_model
from landscape_lib.train.engine import train_run
from landscape_lib.train.environment import resolve_devices

TWO = ["cpu", "cpu"]


@pytest.fixture(autouse=True)
def one_thread_per_device():
    """Two device threads with PyTorch's intra-op pool each would oversubscribe 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batches(shape, n=48, batch=16, seed=1, classes=10):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn((n, *shape), generator=g)
    Y = torch.randint(0, classes, (n,), generator=g)
    return [(X[i:i + batch], Y[i:i + batch]) for i in range(0, n, batch)]


def _model(arch, **options):
    torch.manual_seed(0)
    channels = 1 if arch == "mlp" else 3
    model = create_model(arch, in_channels=channels, image_size=8, num_classes=10, **options)
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        model.train()  # running statistics away from their defaults
        with torch.no_grad():
            for x, _ in _batches((channels, 8, 8), seed=5):
                model(x * 2 + 0.3)
    return model.eval(), (channels, 8, 8)


@pytest.mark.parametrize("first,last,workers", [(0, 41, 2), (3, 10, 2), (0, 7, 3), (0, 1, 4)])
def test_row_blocks_cover_the_rows_once_and_shrink(first, last, workers):
    blocks = row_blocks(first, last, workers)
    rows = [r for a, b in blocks for r in range(a, b)]
    assert rows == list(range(first, last))
    sizes = [b - a for a, b in blocks]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1


CASES = [("mlp", {"hidden": [16, 16]}, "fixed"),            # vmap engine
         ("cnn", {"widths": [4, 8]}, "fixed"),              # loop engine, BN fixed
         ("cnn", {"widths": [4, 8]}, "recompute"),          # BN statistics per point
         ("resnet18", {"width": 4}, "fixed")]


@pytest.mark.parametrize("arch,options,bn", CASES)
def test_two_devices_equal_one_device(arch, options, bn):
    model, shape = _model(arch, **options)
    batches = _batches(shape)
    d1, d2 = random_directions(model, seed=3, count=2)
    center = get_weights(model)
    xs, ys = np.linspace(-1, 1, 5), np.linspace(-0.7, 1.3, 7)  # odd, non-square
    before = [p.detach().clone() for p in model.parameters()]
    one = surface_2d(model, center, d1, d2, xs, ys, batches, bn=bn)
    rows = []
    two = surface_2d_multi(model, center, d1, d2, xs, ys, batches, bn=bn, devices=TWO,
                           on_row=lambda j, loss, acc: rows.append((j, loss, acc)))
    assert two["devices"] == TWO and two["method"] == one["method"]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(two["acc"], one["acc"])
    assert [j for j, _, _ in rows] == list(range(len(ys)))  # handed over in order
    np.testing.assert_array_equal(np.stack([loss for _, loss, _ in rows]), two["loss"])
    ref = surface_2d_loop(model, center, d1, d2, xs, ys, batches, bn=bn)  # independent path
    np.testing.assert_allclose(two["loss"], ref["loss"], rtol=1e-5)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)  # the caller's model is left as it was


def test_resumed_grid_starts_at_start_row():
    model, shape = _model("mlp", hidden=[16])
    batches = _batches(shape)
    d1, d2 = random_directions(model, seed=0, count=2)
    xs = ys = np.linspace(-1, 1, 9)
    full = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches)
    rows = []
    part = surface_2d_multi(model, get_weights(model), d1, d2, xs, ys, batches, devices=TWO,
                            start_row=4, on_row=lambda j, loss, acc: rows.append(j))
    assert rows == list(range(4, 9)) and np.isnan(part["loss"][:4]).all()
    np.testing.assert_allclose(part["loss"][4:], full["loss"][4:], rtol=1e-6)


def test_a_diverged_row_does_not_stop_the_rows_after_it():
    model, shape = _model("mlp", hidden=[16])
    batches = _batches(shape)
    d1, d2 = random_directions(model, seed=0, count=2)
    ys = np.array([0.0, 1e30, 0.5])  # the middle row overflows to inf/NaN
    rows = []
    res = surface_2d_multi(model, get_weights(model), d1, d2, np.linspace(-1, 1, 3), ys, batches,
                           devices=TWO, on_row=lambda j, loss, acc: rows.append(j))
    assert rows == [0, 1, 2] and not np.isfinite(res["loss"][1]).all()
    assert np.isfinite(res["loss"][[0, 2]]).all()


class _Fails(nn.Module):
    """A model whose forward fails from its 4th call on: in whichever device's thread."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.calls = [0]  # shared by the deep copies

    def forward(self, x):
        self.calls[0] += 1
        if self.calls[0] > 3:
            raise RuntimeError("device lost")
        return self.lin(x)

    def __deepcopy__(self, memo):
        new = _Fails()
        new.load_state_dict(self.state_dict())
        new.calls = self.calls
        return new


def test_a_failing_device_raises_in_the_caller_and_stops_the_others():
    model = _Fails()
    batches = _batches((4,), classes=3)
    d1, d2 = random_directions(model, seed=0, count=2)
    with pytest.raises(RuntimeError, match="device lost"):
        surface_2d_multi(model, get_weights(model), d1, d2, np.linspace(-1, 1, 4),
                         np.linspace(-1, 1, 6), batches, devices=TWO, method="loop")


def test_devices_default_to_every_visible_gpu_or_the_named_device():
    assert resolve_devices("cpu") == [torch.device("cpu")]
    n = torch.cuda.device_count()
    if n >= 2:
        assert resolve_devices("cuda:1") == [torch.device("cuda", 1)]
    else:  # a device this machine lacks is refused before anything runs
        with pytest.raises(ConfigError, match="cuda:1"):
            resolve_devices("cuda:1")
    expected = [torch.device("cuda", i) for i in range(n)] if n else [torch.device("cpu")]
    assert resolve_devices("auto") == expected


def test_the_stored_surface_does_not_depend_on_the_devices(store):
    """Same analysis id and rows on two devices as on one; an interrupted two-device surface
    resumes at its first missing row and leaves every row once."""
    cfg = tiny_config(arch="cnn", arch_options={"widths": [4]}, epochs=1)
    rid = cfg.run_id()
    assert train_run(cfg, store, progress=False) == "finished"
    params = {"grid": 7, "span": 0.5, "samples": 64, "bn": "recompute", "bn_samples": 32}
    ctx, _ = provenance.prepare(store, rid, "surface", "last", params, devices=TWO)
    one_ctx, _ = provenance.prepare(store, rid, "surface", "last", params, devices=["cpu"])
    assert ctx.analysis_id == one_ctx.analysis_id and [str(d) for d in ctx.devices] == TWO

    def stop_after_three_rows(fraction, message):
        if message.startswith("row 3/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_analysis(store, rid, "surface", "last", params, devices=TWO,
                     report=stop_after_three_rows)
    assert provenance.stored_status(ctx) == "failed"
    assert len(ctx.read("surface_points")) == 3 * 7
    assert run_analysis(store, rid, "surface", "last", params, devices=TWO) == ctx.analysis_id
    two = ctx.read("surface_points").sort_values(["j", "i"])
    assert len(two) == 49 and not two.duplicated(["i", "j"]).any()
    provenance.forget(ctx)
    assert run_analysis(store, rid, "surface", "last", params, devices=["cpu"]) == ctx.analysis_id
    one = ctx.read("surface_points").sort_values(["j", "i"])
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)
    np.testing.assert_array_equal(two["acc"], one["acc"])
