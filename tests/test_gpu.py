"""The CUDA paths, each against its reference (marked gpu: skipped without CUDA; run them alone
with `python -m pytest -m gpu`, which collects only this module).

- fused optimizers: a fused step equals the single-tensor (for-loop) step;
- torch.compile and CUDA graphs (compile_mode "reduce-overhead", with the fall-back of closure
  optimizers such as SAM): a compiled run's losses equal the eager run's;
- channels-last training equals contiguous training;
- (the Hessian operator's CUDA modes and several GPUs: test_gpu_hessian.py);
- bf16 surfaces stay within BF16_TOLERANCE (relative) of fp32, and the channels-last loop
  engine within 1e-5 of the contiguous one.

Only torch and landscape_lib are imported (no dashboard packages).
"""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_config
from landscape_lib.analyses.surface.directions import get_weights, random_directions
from landscape_lib.analyses.surface.grids import surface_2d
from landscape_lib.models import create_model
from landscape_lib.optim import create_optimizer
from landscape_lib.store import Store
from landscape_lib.train.build import FUSED_CUDA, build_forward, build_optimizer
from landscape_lib.train.engine import train_run
from landscape_lib.train.environment import set_tf32

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
CE = nn.CrossEntropyLoss()
BF16_TOLERANCE = 2e-2   # max relative difference of a bf16 surface's loss from fp32
TRAIN_TOLERANCE = 2e-2  # relative difference of per-epoch losses between two CUDA runs


@pytest.fixture(autouse=True)
def float32_matmuls():
    """TF32 off (true float32 references); the engine turns it on, so restore it after."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    set_tf32(False)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("name", FUSED_CUDA)
def test_fused_optimizer_step_equals_the_unfused_one(name):
    cfg = tiny_config(optimizer=name, lr=0.05, weight_decay=0.01)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4)).to(CUDA)
    twin = copy.deepcopy(model)
    fused = build_optimizer(cfg, model, CUDA)
    assert fused.defaults["fused"] is True
    plain = create_optimizer(name, twin.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             momentum=cfg.momentum, foreach=False)
    x, y = torch.randn(64, 8, device=CUDA), torch.randint(0, 4, (64,), device=CUDA)
    for _ in range(5):
        for net, opt in ((model, fused), (twin, plain)):
            opt.zero_grad()
            CE(net(x), y).backward()
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def cnn_config(**overrides):
    base = dict(dataset_options={"n_train": 512, "n_test": 256, "channels": 3, "size": 8},
                arch="cnn", arch_options={"widths": [8, 16]}, optimizer="sgd-momentum",
                lr=0.05, epochs=2, batch_size=64, amp=False, trajectory="off",
                checkpoint_epochs=[])
    return tiny_config(**{**base, **overrides})


def epoch_losses(cfg, root) -> np.ndarray:
    store = Store(root).ensure()
    assert train_run(cfg, store, device="cuda", progress=False) == "finished"
    rows = store.read("epochs", cfg.run_id()).sort_values("epoch")
    return rows[["train_loss", "val_loss"]].to_numpy()


@pytest.mark.parametrize("optimizer, mode", [("sgd-momentum", "default"),
                                             ("sgd-momentum", "reduce-overhead"),
                                             ("sam-sgd-momentum", "reduce-overhead")])
def test_compiled_training_matches_eager(tmp_path, optimizer, mode):
    eager = epoch_losses(cnn_config(optimizer=optimizer), tmp_path / "eager")
    compiled = epoch_losses(cnn_config(optimizer=optimizer, compile=True, compile_mode=mode),
                            tmp_path / "compiled")
    assert np.isfinite(compiled).all()
    np.testing.assert_allclose(compiled, eager, rtol=TRAIN_TOLERANCE)


def test_the_training_forward_is_compiled_on_cuda():
    model = create_model("mlp", in_channels=1, image_size=8, num_classes=4).to(CUDA)
    forward = build_forward(cnn_config(compile=True), model, CUDA)
    assert forward is not model and isinstance(forward, torch._dynamo.eval_frame.OptimizedModule)
    assert build_forward(cnn_config(optimizer="sophia", compile=True), model, CUDA) is model


def test_channels_last_training_matches_contiguous(tmp_path):
    contiguous = epoch_losses(cnn_config(channels_last=False), tmp_path / "contiguous")
    channels_last = epoch_losses(cnn_config(channels_last=True), tmp_path / "channels_last")
    np.testing.assert_allclose(channels_last, contiguous, rtol=TRAIN_TOLERANCE)


# ---------------------------------------------------------------------- surfaces
@pytest.mark.parametrize("arch, method", [("mlp", "vmap"), ("cnn", "loop")])
def test_bf16_surface_is_close_to_fp32(arch, method):
    torch.manual_seed(0)
    model = create_model(arch, in_channels=3, image_size=8, num_classes=4).to(CUDA).eval()
    batches = [(torch.randn(256, 3, 8, 8, device=CUDA), torch.randint(0, 4, (256,), device=CUDA))]
    d1, d2 = random_directions(model, 0, 2)
    xs = np.linspace(-0.5, 0.5, 5)

    def loss(**kw):
        return surface_2d(model, get_weights(model), d1, d2, xs, xs, batches, method=method,
                          **kw)["loss"]

    fp32 = loss()
    bf16 = loss(precision="bf16", channels_last=arch == "cnn")
    assert np.isfinite(bf16).all()
    assert np.max(np.abs(bf16 - fp32) / np.abs(fp32)) < BF16_TOLERANCE
    if method == "loop":
        np.testing.assert_allclose(loss(channels_last=True), fp32, rtol=1e-5)


@pytest.mark.parametrize("arch, options", [("cnn", {}), ("resnet18", {"width": 8}),
                                           ("vit", {"patch_size": 4})])
def test_graph_surface_equals_the_eager_loop(arch, options):
    """The loop engine's points replayed as CUDA graphs (method "graph", what "auto" takes for
    these nets) give the eager loop's losses; a warm model (BN statistics) is left unchanged."""
    torch.manual_seed(0)
    model = create_model(arch, in_channels=3, image_size=16, num_classes=4, **options)
    model = model.to(CUDA).eval()
    before = copy.deepcopy(model.state_dict())
    batches = [(torch.randn(64, 3, 16, 16, device=CUDA), torch.randint(0, 4, (64,), device=CUDA))
               for _ in range(2)]
    d1, d2 = random_directions(model, 0, 2)
    xs = np.linspace(-0.5, 0.5, 7)
    res = {m: surface_2d(model, get_weights(model), d1, d2, xs, xs[:5], batches, method=m)
           for m in ("loop", "graph", "auto")}
    assert res["graph"]["method"] == res["auto"]["method"] == "graph"
    np.testing.assert_allclose(res["graph"]["loss"], res["loop"]["loss"], rtol=1e-5)
    np.testing.assert_array_equal(res["graph"]["acc"], res["loop"]["acc"])
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
