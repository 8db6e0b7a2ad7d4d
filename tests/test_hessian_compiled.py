"""Compiled Hessian-vector products (``products.compiled_product``): one compilation per model
structure in a process, shared by every checkpoint of it, each product its own model's (checked
against dense float64 Hessians of each model). On the CPU the tests compile with dynamo and
AOTAutograd but not inductor's code generation (``products.BACKEND``, minutes on 2 cores): what
is tested is which tensors enter the compiled function; inductor's products on a GPU are in
``test_gpu_hessian.py``."""
import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from hessian_problems import CE, NETS, _digits, dense_hessian
from landscape_lib.analyses.hessian import products
from landscape_lib.analyses.hessian.analysis import hessian_analysis
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.models import create_model


def _net(seed: int, **changes) -> torch.nn.Module:
    """The tests' BN conv net with its own weights and BatchNorm running statistics (forward
    passes in train mode on seeded inputs), float64, in eval mode."""
    arch, options = NETS["cnn-bn"]
    torch.manual_seed(seed)
    model = create_model(arch, in_channels=1, image_size=8, num_classes=10,
                         **{**options, **changes}).double()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 1, 8, 8, dtype=torch.float64) * (1 + seed))
    return model.eval()


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(products, "BACKEND", "aot_eager")
    products._COMPILED.clear()
    torch._dynamo.reset()
    counters.clear()
    yield
    products._COMPILED.clear()
    torch._dynamo.reset()


def test_checkpoints_of_one_structure_share_one_compilation(fresh_cache):
    _, batches = _digits(64)
    V = torch.randn(sum(p.numel() for p in _net(0).parameters()), 3,
                    generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    frames = []
    for seed in (0, 1):
        model = _net(seed)
        op = HessianOperator(model, CE, batches, mode="compile", chunk_size=2)
        H = dense_hessian(model, batches)
        # 3 columns in calls of 2 (the last padded with a zero column), and a single column
        torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(op @ V[:, 0], H @ V[:, 0], rtol=1e-9, atol=1e-11)
        assert op.n_products == 4 and op._forward.columns == 6  # padded columns computed
        frames.append(counters["stats"]["unique_graphs"])
    # one compiled function and one graph for both models: the second compiled nothing
    assert len(products._COMPILED) == 1 and frames[0] >= 1 and frames[1] == frames[0]
    # the BatchNorm statistics are inputs, not the first model's: the two Hessians differ
    assert not torch.allclose(dense_hessian(_net(0), batches), dense_hessian(_net(1), batches))


def test_another_structure_gets_its_own_compilation(fresh_cache):
    _, batches = _digits(32)
    eps_changed = _net(0)  # same tensors, another BatchNorm eps: another computation
    eps_changed.apply(lambda m: setattr(m, "eps", 1e-2) if hasattr(m, "eps") else None)
    ops = [HessianOperator(model, CE, batches, mode="compile", chunk_size=2)
           for model in (_net(0), eps_changed)]
    for op in ops:
        H = dense_hessian(op.model, batches)
        v = torch.randn(H.shape[0], dtype=torch.float64)
        torch.testing.assert_close(op @ v, H @ v, rtol=1e-9, atol=1e-11)
    assert len(products._COMPILED) == 2  # a module's plain attributes are in the key


def test_an_analysis_in_compile_mode_compiles_once_and_equals_forward_mode(fresh_cache):
    """The whole network's product is compiled; the separate way's per-layer operators run the
    same product uncompiled (``analysis.make_operator``), so no layer is a compilation."""
    _, batches = _digits(64)
    model = _net(0)
    small = dict(samples=64, density_steps=12, trace_samples=4, layer_method="separate",
                 layer_steps=4, bottom_max_steps=12, tf32=False)
    res = {mode: hessian_analysis(model, CE, batches, hvp_mode=mode, hvp_chunk=2, **small)
           for mode in ("forward", "compile")}
    assert len(products._COMPILED) == 1 and res["compile"].hvp_mode == "compile x2"
    for a, b in ((res["forward"].top.values, res["compile"].top.values),
                 (res["forward"].per_layer["top_eig"], res["compile"].per_layer["top_eig"]),
                 (res["forward"].per_layer["trace"], res["compile"].per_layer["trace"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7)
