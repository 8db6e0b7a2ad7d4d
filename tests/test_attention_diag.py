"""Attention diagnostics: adjacent-layer Jensen-Shannon divergence and the block structure of a
single self-attention layer's Hessian (Gauss-Newton + functional parts)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from torch.autograd.functional import hessian

from landscape_lib.analyses.attention import (BLOCKS, attention_hessian_blocks,
                                              attention_hessian_sweep, attention_jsd,
                                              attention_problem, block_histograms,
                                              model_attention_jsd)
from landscape_lib.errors import ConfigError

LN2 = math.log(2)


def random_maps(L=3, B=2, H=2, T=5, seed=0, zero_share=0.3):
    """Row-stochastic (B, H, T, T) maps with some exact zeros (like local attention)."""
    g = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(L):
        a = torch.rand(B, H, T, T, generator=g, dtype=torch.float64)
        a = a * (torch.rand(B, H, T, T, generator=g) > zero_share)
        a[..., 0] += 1e-3  # keep every row non-empty
        maps.append(a / a.sum(-1, keepdim=True))
    return maps


def rows_of(p, B=2, H=2, T=4):
    return torch.tensor(p, dtype=torch.float64).expand(B, H, T, T).clone()


# --- Jensen-Shannon divergence ----------------------------------------------------------------

def test_jsd_is_zero_for_identical_maps_and_symmetric_and_bounded():
    a, b = random_maps(L=2)
    same = attention_jsd([a, a.clone()])
    assert list(same.columns) == ["layer", "head", "jsd"] and len(same) == 2
    np.testing.assert_allclose(same.jsd, 0.0, atol=1e-15)
    ab, ba = attention_jsd([a, b]), attention_jsd([b, a])
    np.testing.assert_allclose(ab.jsd, ba.jsd, rtol=1e-13)
    assert (ab.jsd > 0).all() and (ab.jsd <= LN2).all()


def test_jsd_matches_the_closed_form():
    p, q = [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]
    # m = (3/8, 3/8, 1/8, 1/8): KL(p||m) = ln(4/3), KL(q||m) = ln(4/3)/2, JSD = 3/4 ln(4/3).
    expected = 0.75 * math.log(4 / 3)
    assert expected == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-12)
    df = attention_jsd([rows_of(p), rows_of(q)])
    np.testing.assert_allclose(df.jsd, expected, rtol=1e-12)
    disjoint = attention_jsd([rows_of([1.0, 0, 0, 0]), rows_of([0, 0.5, 0.5, 0])])
    np.testing.assert_allclose(disjoint.jsd, LN2, rtol=1e-12)


def test_jsd_is_per_layer_pair_and_head_and_averaged_over_queries():
    p, q = [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]
    closed = 0.75 * math.log(4 / 3)
    layer0 = rows_of(p)
    layer1 = rows_of(p)
    layer1[:, 1] = rows_of(q)[:, 1]  # head 1 changes between blocks 0 and 1
    layer2 = layer1.clone()
    layer2[:, 0, 0] = torch.tensor(q, dtype=torch.float64)  # head 0, query 0 only: 1 of 4 rows
    df = attention_jsd([layer0, layer1, layer2]).set_index(["layer", "head"]).jsd
    np.testing.assert_allclose([df[0, 0], df[0, 1], df[1, 0], df[1, 1]],
                               [0.0, closed, closed / 4, 0.0], atol=1e-15)


def test_jsd_rejects_mismatched_maps():
    a, b = random_maps(L=2)
    with pytest.raises(ConfigError):
        attention_jsd([a])
    with pytest.raises(ConfigError):
        attention_jsd([a, b[:, :1]])


class MapsModel(torch.nn.Module):
    """A stand-in exposing attention_maps(x): block l attends with softmax((l + 1) * x x^T)."""

    def __init__(self, depth=3):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.depth = depth
        self.modes_seen = []

    def attention_maps(self, x):
        self.modes_seen.append(self.training)
        scores = x @ x.transpose(-1, -2)  # (B, H, T, T) from x of shape (B, H, T, D)
        return [((l + 1) * self.scale * scores).softmax(-1) for l in range(self.depth)]


def test_model_attention_jsd_averages_over_batches_in_eval_mode():
    model = MapsModel()
    x = torch.randn(6, 2, 5, 3, generator=torch.Generator().manual_seed(1))
    whole = model_attention_jsd(model, x)
    batched = model_attention_jsd(model, [(x[:4], None), (x[4:], None)])
    np.testing.assert_allclose(batched.jsd, whole.jsd, rtol=1e-12)
    np.testing.assert_allclose(whole.jsd, attention_jsd(model.attention_maps(x)).jsd, rtol=1e-12)
    assert model.training and model.modes_seen[:3] == [False, False, False]


def test_model_attention_jsd_on_a_tiny_vit():
    from landscape_lib.models import create_model
    torch.manual_seed(0)
    model = create_model("vit", in_channels=3, image_size=8, num_classes=10, patch_size=4,
                         dim=16, depth=3, heads=2)
    df = model_attention_jsd(model, torch.randn(4, 3, 8, 8))
    assert sorted(zip(df["layer"], df["head"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert ((df.jsd >= 0) & (df.jsd <= LN2)).all() and (df.jsd > 0).any()


# --- single self-attention layer Hessian ------------------------------------------------------

def reference_loss(X, Y, Wq, Wk, Wv, kind, pre_ln):
    """The layer written out again from the formulas, independent of the library's code."""
    n, T, d = X.shape
    if pre_ln:
        X = (X - X.mean(-1, keepdim=True)) / torch.sqrt(X.var(-1, unbiased=False, keepdim=True)
                                                         + 1e-5)
    S = torch.einsum("nti,nsi->nts", X @ Wq, X @ Wk) / math.sqrt(d)
    A = S.softmax(-1) if kind == "softmax" else S
    out = torch.einsum("nts,nsi->nti", A, X @ Wv)
    return ((out - Y) ** 2).sum() / (2 * n * T)


@pytest.mark.parametrize("kind, pre_ln, scale", [("softmax", False, 0.7), ("linear", True, 1.5)])
def test_hessian_blocks_match_dense_hessians_of_each_block(kind, pre_ln, scale):
    d, T, n = 3, 4, 3
    result = attention_hessian_blocks(scale, kind, pre_ln, d=d, T=T, n=n, seed=3)
    X, Y, W = attention_problem(scale, d=d, T=T, n=n, seed=3)
    W = dict(zip(BLOCKS, W))

    def loss_of(**changed):
        return reference_loss(X, Y, **{f"W{b[0]}": changed.get(b, W[b]) for b in BLOCKS},
                              kind=kind, pre_ln=pre_ln)

    for r in BLOCKS:
        for c in BLOCKS:
            if r == c:
                dense = hessian(lambda w: loss_of(**{r: w}), W[r])
            else:
                dense = hessian(lambda a, b: loss_of(**{r: a, c: b}), (W[r], W[c]))[0][1]
            np.testing.assert_allclose(result["blocks"]["full"][r, c],
                                       dense.reshape(d * d, d * d).numpy(), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", ["softmax", "linear"])
@pytest.mark.parametrize("pre_ln", [False, True])
def test_gauss_newton_decomposition(kind, pre_ln):
    r = attention_hessian_blocks(1.0, kind, pre_ln, d=4, T=5, n=6, seed=0)
    H, G, F = r["full"], r["gauss_newton"], r["functional"]
    scale = np.abs(H).max()
    np.testing.assert_allclose(G + F, H, atol=1e-12 * scale)  # three separate computations
    eig = np.linalg.eigvalsh(G)
    assert eig.min() >= -1e-10 * max(1.0, eig.max())  # J^T H_out J is PSD
    np.testing.assert_allclose(G, G.T, atol=1e-12 * scale)
    # The output is linear in W_v, so d^2 out / dW_v^2 = 0: no functional value-value block.
    assert np.abs(r["blocks"]["functional"]["value", "value"]).max() == 0.0
    assert np.abs(F).max() > 1e-6  # but the functional part itself is not empty


def test_linear_attention_has_no_functional_diagonal_blocks_but_softmax_does():
    # Linear attention is linear in each of W_q, W_k, W_v separately, so every diagonal block of
    # sum_o r_o d^2 out_o is zero; softmax is not linear in W_q or W_k.
    linear = attention_hessian_blocks(1.0, "linear", False)["blocks"]["functional"]
    softmax = attention_hessian_blocks(1.0, "softmax", False)["blocks"]["functional"]
    for b in BLOCKS:
        assert np.abs(linear[b, b]).max() < 1e-13
    for b in ("query", "key"):
        assert np.linalg.norm(softmax[b, b]) > 1e-3
    assert np.linalg.norm(linear["query", "key"]) > 1e-3  # off-diagonal blocks remain


def test_value_block_of_the_gauss_newton_part_has_its_closed_form():
    # out = M W_v with M = A(X) X: G_vv = kron(M^T M / (n T), I_d) in row-major vec(W_v).
    d, T, n = 4, 5, 6
    r = attention_hessian_blocks(0.8, "softmax", False, d=d, T=T, n=n, seed=2)
    X, _, (Wq, Wk, _) = attention_problem(0.8, d=d, T=T, n=n, seed=2)
    A = ((X @ Wq) @ (X @ Wk).transpose(-1, -2) / math.sqrt(d)).softmax(-1)
    M = (A @ X).reshape(n * T, d).numpy()
    expected = np.kron(M.T @ M / (n * T), np.eye(d))
    np.testing.assert_allclose(r["blocks"]["gauss_newton"]["value", "value"], expected, atol=1e-12)
    np.testing.assert_allclose(r["blocks"]["full"]["value", "value"], expected, atol=1e-12)


def test_sweep_shows_the_input_scale_laws():
    df = attention_hessian_sweep([1.0, 10.0, 100.0], ["linear"], [False, True], d=3, T=4, n=4)
    assert list(df.columns) == ["scale", "attention", "pre_ln", "part", "row_block",
                                "col_block", "frobenius"]
    assert len(df) == 3 * 2 * 3 * 9
    norms = df.set_index(["pre_ln", "part", "row_block", "col_block", "scale"]).frobenius
    for r in BLOCKS:
        for c in BLOCKS:
            # Linear attention's output is cubic in X, so J and hence G scale as scale^3, scale^6.
            ratio = norms[False, "gauss_newton", r, c, 10.0] / norms[False, "gauss_newton", r, c, 1.0]
            assert ratio == pytest.approx(1e6, rel=1e-9)
            # Pre-LN normalises the input: once scale^2 >> LayerNorm's eps the Hessian stops moving.
            for part in ("full", "gauss_newton", "functional"):
                assert norms[True, part, r, c, 100.0] == pytest.approx(
                    norms[True, part, r, c, 10.0], rel=1e-5, abs=1e-12)


def test_block_histograms_count_every_entry_on_shared_edges():
    d = 3
    df = block_histograms(["softmax", "linear"], bins=10, d=d, T=4, n=4)
    assert list(df.columns) == ["attention", "part", "block", "bin_left", "bin_right", "count"]
    counts = df.groupby(["attention", "part", "block"])["count"].sum()
    assert len(counts) == 2 * 3 * 9 and (counts == (d * d) ** 2).all()
    edges = df.groupby("part").apply(lambda g: g.groupby(["attention", "block"]).bin_left
                                     .apply(tuple).nunique(), include_groups=False)
    assert (edges == 1).all()  # within a part every block and kind share the bins
    logs = block_histograms(["softmax"], parts=["functional"], value="log10_abs", d=d, T=4, n=4)
    per_block = logs.groupby("block")["count"].sum()
    assert per_block["value-value"] == 0 and per_block["query-query"] == (d * d) ** 2
    with pytest.raises(ConfigError):
        block_histograms(value="abs")
    with pytest.raises(ConfigError):
        attention_hessian_blocks(1.0, "cosine")
