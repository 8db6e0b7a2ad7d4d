"""The Hessian operator's CUDA paths and several GPUs, each against its reference (marked gpu:
skipped without CUDA; `python -m pytest -m gpu` runs them with test_gpu.py).

- forward-over-reverse products, per column and vmapped, eager and as CUDA graphs, equal the
  cached double-backward graph's products (float32, TF32 off);
- `auto` times its candidates on CUDA, keeps the fastest measured one, counts its trial
  products and answers like the cached graph; the second operator of a structure also tries
  the compiled product;
- compiled products (inductor, as CUDA graphs) equal the cached graph's, one compilation for
  two checkpoints; compiled ahead of time, saved, and loaded with nothing traced again;
- the top eigenvectors' host copy, started on a side stream while later work runs, waits for
  the work queued before it;
- two NCCL processes (one per GPU; skipped with fewer than 2 GPUs) summing products over
  their data shards equal one process: products and top eigenvalues (issue 13).
"""
import json

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from landscape_lib.analyses.hessian import auto as hessian_auto, products
from landscape_lib.analyses.hessian.analysis import host_copy
from landscape_lib.analyses.hessian.distributed import ShardedOperator, launch, shard
from landscape_lib.analyses.hessian.lanczos import extreme_eigenpairs
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.analyses.hessian.products import WARMUPS
from landscape_lib.locations import cache_root
from landscape_lib.models import create_model
from test_gpu import float32_matmuls, rel  # noqa: F401 (the fixture is autouse)

pytestmark = pytest.mark.gpu

CE = nn.CrossEntropyLoss()
HVP_TOLERANCE = 1e-4    # relative norm difference of two float32 HVP computations
EIG_TOLERANCE = 1e-4    # relative difference of the top eigenvalues, several GPUs vs one


def cnn_batches(device, n_batches=1):
    """A small CNN with BatchNorm and its batches (seeded: every process builds the same)."""
    torch.manual_seed(0)
    model = create_model("cnn", in_channels=3, image_size=8, num_classes=4, widths=(4, 8))
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 3, 8, 8, generator=gen).to(device),
                torch.randint(0, 4, (32,), generator=gen).to(device)) for _ in range(n_batches)]
    return model.to(device).eval(), batches


@pytest.fixture
def cnn_problem():
    model, batches = cnn_batches(torch.device("cuda"))
    V = torch.randn(sum(p.numel() for p in model.parameters()), 3, device="cuda")
    cached = HessianOperator(model, CE, batches, mode="cached") @ V
    return model, batches, V, cached


@pytest.mark.parametrize("mode, chunk_size, split, channels_last", [
    ("forward", 1, 1, False), ("forward", 3, 1, False), ("graph", 1, 1, False),
    ("graph", 2, 1, False), ("graph", 2, 4, True), ("graph", 4, 4, False),
    ("forward", 4, 3, True)])
def test_forward_modes_equal_the_cached_graph(cnn_problem, mode, chunk_size, split,
                                              channels_last):
    """3 columns: with 2 per call a graph of width 2 and one of width 1, with 4 per call one of
    width 3 (no padded columns), each over its own micro-batches (``products``)."""
    model, batches, V, cached = cnn_problem
    op = HessianOperator(model, CE, batches, mode=mode, chunk_size=chunk_size, split=split,
                         channels_last=channels_last)
    for _ in range(WARMUPS + 2):  # graph mode: eager warm-ups, the capture, a replay
        assert rel(op @ V, cached) < HVP_TOLERANCE
    assert op.mode == mode  # no fall-back to double backward on CUDA
    assert op.n_products == (WARMUPS + 2) * V.shape[1]


def test_auto_mode_keeps_the_fastest_candidate_and_answers_like_them(cnn_problem):
    model, batches, V, cached = cnn_problem
    hessian_auto.forget(saved=True)
    op = HessianOperator(model, CE, batches)
    out = op @ V  # the trials run on the first product
    assert {"graph", "graph chlast", "graph x4", "graph x4 chlast", "graph x8 /2",
            "cached"} <= set(op.trials)
    timed = {k: v for k, v in op.trials.items() if isinstance(v, float)}
    assert timed, op.trials
    assert op.label == min(timed, key=timed.get)
    assert op.trial_products > 0 and op.n_products == V.shape[1] + op.trial_products
    assert rel(out, cached) < HVP_TOLERANCE
    [saved] = (cache_root() / hessian_auto.SAVED).glob("*.json")  # for later processes
    assert torch.cuda.get_device_name() in json.loads(saved.read_text())["key"]
    # the key's second operator (a second analysis) also tries the compiled product
    again = HessianOperator(model, CE, batches)
    assert rel(again @ V, cached) < HVP_TOLERANCE
    assert hessian_auto.COMPILED.label in again.trials and "compile trial" in again.trials
    timed = {k: v for k, v in again.trials.items() if isinstance(v, float)}
    assert again.label == min(timed, key=timed.get) and again.trial_products > 0
    third = HessianOperator(model, CE, batches)  # the choice is remembered, no trials
    assert rel(third @ V, cached) < HVP_TOLERANCE
    assert third.label == again.label and third.trial_products == 0
    hessian_auto.forget(saved=True)


def test_compiled_products_are_shared_by_checkpoints_of_one_structure():
    """Inductor's code on CUDA, captured as a CUDA graph: each checkpoint's products equal its
    own cached graph's, the second checkpoint compiles nothing (``products.compiled_product``)."""
    from torch._dynamo.utils import counters
    products._COMPILED.clear()
    graphs = []
    for seed in (0, 1):
        model, batches = cnn_batches(torch.device("cuda"))
        if seed:
            with torch.no_grad():  # other weights and BatchNorm statistics
                model.train()(batches[0][0] * 3)
                for p in model.parameters():
                    p.mul_(1.5)
            model.eval()
        V = torch.randn(sum(p.numel() for p in model.parameters()), 3, device="cuda")
        cached = HessianOperator(model, CE, batches, mode="cached") @ V
        op = HessianOperator(model, CE, batches, mode="compile", chunk_size=4, split=4)
        for _ in range(WARMUPS + 2):  # eager compiled calls, the graph's capture, a replay
            assert rel(op @ V, cached) < HVP_TOLERANCE
        assert rel(op @ V[:, 0], cached[:, 0]) < HVP_TOLERANCE
        assert op.mode == "compile" and list(op._forward._graphs) == [4]
        graphs.append(counters["stats"]["unique_graphs"])
    assert len(products._COMPILED) == 1 and graphs[1] == graphs[0]
    products._COMPILED.clear()


def test_a_later_process_loads_the_compiled_product_saved_ahead_of_time():
    """Inductor's code on CUDA compiled ahead of time and saved (``precompiled.SavedProduct``);
    with the process' compiled products and dynamo's state forgotten, as in a later process,
    it is loaded from its file (dynamo traces nothing) and, captured as a CUDA graph, answers
    like the cached graph; the load refreshes the file's time."""
    from torch._dynamo.utils import counters

    from landscape_lib.analyses.hessian import precompiled
    if not precompiled.available():
        pytest.skip("this torch has no ahead-of-time compilation")
    model, batches = cnn_batches(torch.device("cuda"))
    V = torch.randn(sum(p.numel() for p in model.parameters()), 3, device="cuda")
    cached = HessianOperator(model, CE, batches, mode="cached") @ V
    loaded = []
    for process in ("first", "later"):
        products._COMPILED.clear()
        torch._dynamo.reset()
        if process == "first":
            precompiled.forget()
        traced = counters["stats"]["unique_graphs"]
        op = HessianOperator(model, CE, batches, mode="compile", chunk_size=4, split=2)
        for _ in range(WARMUPS + 2):  # eager compiled calls, the graph's capture, a replay
            assert rel(op @ V, cached) < HVP_TOLERANCE
        product = op._forward._product
        [path] = (cache_root() / precompiled.SAVED).glob("*.bin")
        loaded.append((product.saved, product.loaded, path.stat().st_mtime_ns))
        if process == "later":
            assert counters["stats"]["unique_graphs"] == traced  # nothing traced
    (saved, _, written), (again, read, used) = loaded
    assert (saved, again, read) == (1, 0, 1) and used >= written
    products._COMPILED.clear()
    precompiled.forget()


def test_host_copy_waits_for_the_work_queued_before_it():
    """The copy runs on another stream: without waiting for the fill queued behind a long
    kernel it would read the zeros."""
    v = torch.zeros(1000, 3, device="cuda")
    torch.cuda._sleep(200_000_000)  # about 0.1 s of GPU time before the fill
    v.fill_(2.0)
    host = host_copy(v)()
    assert host.device.type == "cpu" and host.shape == (3, 1000)
    assert bool((host == 2).all())


def _rank(rank, world, queue):
    model, batches = cnn_batches(torch.device(f"cuda:{rank}"), n_batches=3)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    mine = batches[shard(len(batches), rank, world)]
    op = ShardedOperator(HessianOperator(model, CE, mine, mode="forward"))
    V = torch.randn(op.shape[0], 2, generator=torch.Generator().manual_seed(5)).to(op.device)
    HV = (op @ V).cpu().numpy()
    top = extreme_eigenpairs(op, 3, "LA", 1e-5, seed=0).values
    if rank == 0:
        queue.put((HV, top))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_nccl_processes_equal_one_process():
    queue = mp.get_context("spawn").SimpleQueue()
    launch(_rank, 2, "nccl", args=(queue,))
    HV, top = queue.get()
    model, batches = cnn_batches(torch.device("cuda:0"), n_batches=3)
    op = HessianOperator(model, CE, batches, mode="forward")
    V = torch.randn(op.shape[0], 2, generator=torch.Generator().manual_seed(5)).to(op.device)
    ref = (op @ V).cpu().numpy()
    assert np.linalg.norm(HV - ref) / np.linalg.norm(ref) < HVP_TOLERANCE
    np.testing.assert_allclose(top, extreme_eigenpairs(op, 3, "LA", 1e-5, seed=0).values,
                               rtol=EIG_TOLERANCE)
