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
from landscape_lib.analyses.hessian import auto as hessian_auto, products
from landscape_lib.analyses.hessian.analysis import hessian_analysis
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.models import MODELS, create_model


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


@pytest.fixture(scope="module")
def compiled():
    """The process' compiled products, emptied before and after this module; the tests count
    what they add (a test after another reuses its compilation of the same structure)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(products, "BACKEND", "aot_eager")
        products._COMPILED.clear()
        torch._dynamo.reset()
        yield products._COMPILED
        products._COMPILED.clear()
        torch._dynamo.reset()


def test_checkpoints_of_one_structure_share_one_compilation(compiled):
    _, batches = _digits(64)
    before = len(compiled)
    V = torch.randn(sum(p.numel() for p in _net(0).parameters()), 3,
                    generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    frames, hessians = [], []
    for seed in (0, 1):
        model = _net(seed).train()  # built in train mode: the operator's products are eval's
        op = HessianOperator(model, CE, batches, mode="compile", chunk_size=2)
        H = dense_hessian(model.eval(), batches)
        hessians.append(H)
        # 3 columns in calls of 2 (the last padded with a zero column), and a single column
        torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(op @ V[:, 0], H @ V[:, 0], rtol=1e-9, atol=1e-11)
        assert op.n_products == 4 and op._forward.columns == 6  # padded columns computed
        frames.append(counters["stats"]["unique_graphs"])
    # at most one compiled function and graph for both models: the second compiled nothing
    assert len(compiled) - before <= 1 and frames[1] == frames[0] and len(compiled)
    # the BatchNorm statistics are inputs, not the first model's: the two Hessians differ
    assert not torch.allclose(*hessians)


def test_another_structure_gets_its_own_compilation(compiled):
    _, batches = _digits(64)
    eps_changed = _net(0)  # same tensors, another BatchNorm eps: another computation
    eps_changed.apply(lambda m: setattr(m, "eps", 1e-2) if hasattr(m, "eps") else None)
    keys, graphs = [], []
    # dynamo's limit of compilations per code object: each structure has a code of its own
    with torch._dynamo.config.patch(recompile_limit=1):
        for model in (_net(0), eps_changed):
            op = HessianOperator(model, CE, batches, mode="compile", chunk_size=2)
            H = dense_hessian(model, batches)
            v = torch.randn(H.shape[0], dtype=torch.float64)
            graphs.append(counters["stats"]["unique_graphs"])
            torch.testing.assert_close(op @ v, H @ v, rtol=1e-9, atol=1e-11)
            keys.append(set(compiled))
    assert len(keys[1] - keys[0]) == 1  # a module's attributes are in the key
    assert counters["stats"]["unique_graphs"] > graphs[1]  # compiled, not run eagerly


def test_an_analysis_in_compile_mode_compiles_once_and_equals_forward_mode(compiled):
    """The whole network's product is compiled; the separate way's per-layer operators run the
    same product uncompiled (``analysis.make_operator``), so no layer is a compilation."""
    _, batches = _digits(64)
    model = _net(0)
    small = dict(samples=64, density_steps=12, trace_samples=4, layer_method="separate",
                 layer_steps=4, bottom_max_steps=12, tf32=False)
    res = {"forward": hessian_analysis(model, CE, batches, hvp_mode="forward", hvp_chunk=2,
                                       **small)}
    before = set(compiled)
    res["compile"] = hessian_analysis(model, CE, batches, hvp_mode="compile", hvp_chunk=2,
                                      **small)
    assert len(set(compiled) - before) <= 1 and res["compile"].hvp_mode == "compile x2"
    assert len(compiled)
    # without hvp_chunk: the shape auto compiles (4 columns over half batches), not 1 column
    res["default"] = hessian_analysis(model, CE, batches, hvp_mode="compile", **small)
    assert res["default"].hvp_mode == hessian_auto.COMPILED.label == "compile x4 /2"
    for other in ("compile", "default"):
        for a, b in ((res["forward"].top.values, res[other].top.values),
                     (res["forward"].per_layer["top_eig"], res[other].per_layer["top_eig"]),
                     (res["forward"].per_layer["trace"], res[other].per_layer["trace"])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-7)


def test_the_structure_key_tells_checkpoints_from_other_computations():
    """Two checkpoints of every registered architecture share a key (so a grid's runs share one
    compilation); a hook, another eps or train mode give another key (no wrong reuse)."""
    for name in MODELS.names():
        keys = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            keys.append(products.structure(create_model(name, in_channels=3, image_size=32,
                                                        num_classes=10).eval()))
        assert keys[0] == keys[1] and hash(keys[0]) is not None, name
    model = _net(0)
    key = products.structure(model)
    assert products.structure(_net(1)) == key
    changed = [_net(0).train()]
    changed.append(_net(0))
    changed[-1].register_forward_hook(lambda *args: None)
    changed.append(_net(0))
    next(m for m in changed[-1].modules() if hasattr(m, "eps")).eps = 1e-3
    assert all(products.structure(m) != key for m in changed)
