"""Two gloo processes summing Hessian-vector products over data shards equal one process
(issue 13), in float64 so that only the order of the sums differs: the products to rtol 1e-10,
the whole analysis (top, bottom, trace, shares, per-layer tops and traces) to rtol 1e-8."""
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from landscape_lib.analyses.hessian.analysis import analyse, settings
from landscape_lib.errors import ConfigError
from landscape_lib.analyses.hessian.distributed import ShardedOperator, launch, shard
from landscape_lib.analyses.hessian.operator import HessianOperator

CE = nn.CrossEntropyLoss()
N = 90  # samples: 45 per rank, in uneven batches (32 + 13) on each
SETTINGS = dict(top_k=3, trace_samples=8, density_vectors=2, density_steps=20, layer_steps=4)


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4)).double()
    x = torch.randn(N, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (N,))
    return model, x, y


def batches(x, y, size=32):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def probe(n):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def summary(op, model):
    res = analyse(op, model, settings(**SETTINGS))
    return {"HV": (op @ probe(op.shape[0])).numpy(), "top": res.top.values,
            "bottom": res.bottom.values, "trace": res.trace, "neg_share": res.shares.neg_share,
            "layer_tops": res.per_layer["top_eig"].to_numpy(),
            "layer_traces": res.per_layer["trace"].to_numpy(),
            "products": op.n_products, "samples": op.n_samples}


def _rank(rank, world, queue):
    torch.set_num_threads(1)
    model, x, y = problem()
    part = shard(N, rank, world)
    out = summary(ShardedOperator(HessianOperator(model, CE, batches(x[part], y[part]),
                                                  mode="cached")), model)
    if rank == 0:
        queue.put(out)  # NumPy and floats: tensors cannot outlive their process


def test_two_gloo_ranks_equal_one_process():
    queue = mp.get_context("spawn").SimpleQueue()
    launch(_rank, 2, "gloo", args=(queue,))
    got = queue.get()
    model, x, y = problem()
    ref = summary(HessianOperator(model, CE, batches(x, y), mode="cached"), model)
    np.testing.assert_allclose(got["HV"], ref["HV"], rtol=1e-10, atol=1e-12)
    for key in ("top", "bottom", "trace", "neg_share", "layer_tops", "layer_traces"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-8, atol=1e-12, err_msg=key)
    assert got["products"] == ref["products"] and got["samples"] == ref["samples"] == N


def _one_rank_fails(rank, world, error):
    if rank == 1:
        raise error
    torch.distributed.all_reduce(torch.ones(1))  # waits for rank 1, which never comes


def test_an_error_on_one_rank_stops_the_other_and_a_user_error_keeps_its_type():
    """Rank 0 waits in a collective for rank 1, which raised: launch stops it at once (not at
    the 30-minute timeout) and raises a ConfigError as itself (run_analysis then writes
    nothing), any other error as torch's ProcessRaisedException (with the traceback of the
    first rank to fail: rank 1's, or rank 0's broken connection)."""
    with pytest.raises(ConfigError, match="^rank 1 refuses$"):
        launch(_one_rank_fails, 2, "gloo", args=(ConfigError("rank 1 refuses"),))
    with pytest.raises(mp.ProcessRaisedException):
        launch(_one_rank_fails, 2, "gloo", args=(ZeroDivisionError("a bug"),))
