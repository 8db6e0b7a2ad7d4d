"""Attention diagnostics.

(a) RealFormer's analysis (He et al. 2020): the Jensen-Shannon divergence between the attention
    distributions of vertically adjacent layers, per head.
(b) The Hessian of a single self-attention layer (Ormaniec, Dangel & Singh, ICLR 2025): split
    into query/key/value blocks and into its Gauss-Newton and functional parts, as a function of
    the input's scale, with softmax or linear attention and with or without Pre-LN.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F_
from torch import Tensor, nn
from torch.autograd.functional import hessian, jacobian
from tqdm.auto import tqdm

from ..errors import ConfigError, check_choice
from ..models.attention import ATTENTION_KINDS

# ---------------------------------------------------------------------------------------------
# (a) Jensen-Shannon divergence between adjacent layers' attention
# ---------------------------------------------------------------------------------------------


def jensen_shannon(p: Tensor, q: Tensor, dim: int = -1) -> Tensor:
    """JSD(p, q) = KL(p || m)/2 + KL(q || m)/2 with m = (p + q)/2, in nats (so 0 <= JSD <= ln 2).

    Zero probabilities are safe: 0 log 0 = 0 (xlogy), and m > 0 wherever p or q is.
    """
    m = (p + q) / 2
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim)
    return ((kl_pm + kl_qm) / 2).clamp_min(0.0)  # rounding can leave -1e-17


def _jsd_sums(attn_maps: Sequence[Tensor]) -> tuple[Tensor, int]:
    """(layer pairs, heads) sums over batch and query tokens, and the number of summed rows."""
    if len(attn_maps) < 2:
        raise ConfigError(f"adjacent-layer JSD needs attention maps of at least 2 blocks, "
                          f"got {len(attn_maps)}")
    shape = attn_maps[0].shape
    if len(shape) != 4 or shape[-1] != shape[-2] or any(a.shape != shape for a in attn_maps):
        raise ConfigError(f"attention maps must all be (B, heads, T, T) of one shape; got "
                          f"{[tuple(a.shape) for a in attn_maps]}")
    # One pair at a time: stacking all blocks in float64 would hold L copies of (B, H, T, T).
    sums = [jensen_shannon(lower.detach().double(), upper.detach().double()).sum(dim=(0, 2))
            for lower, upper in zip(attn_maps[:-1], attn_maps[1:])]  # JSD per (B, H, query)
    return torch.stack(sums), shape[0] * shape[2]


def _jsd_frame(sums: Tensor, rows: int) -> pd.DataFrame:
    mean = (sums / rows).cpu().numpy()
    layer, head = np.indices(mean.shape)
    return pd.DataFrame({"layer": layer.ravel(), "head": head.ravel(), "jsd": mean.ravel()})


def attention_jsd(attn_maps: Sequence[Tensor]) -> pd.DataFrame:
    """Rows (layer, head, jsd): JSD between blocks `layer` and `layer + 1` per head, averaged
    over query tokens and batch. Input: a list over blocks of (B, heads, T, T) row-stochastic
    tensors, as returned by a ViT's `attention_maps(x)`. Natural log, so 0 <= jsd <= ln 2."""
    return _jsd_frame(*_jsd_sums(attn_maps))


@torch.no_grad()
def model_attention_jsd(model: nn.Module, x, max_batches: int | None = None,
                        progress: bool = False) -> pd.DataFrame:
    """`attention_jsd` of a model on held-out inputs, in eval mode.

    x is one input tensor, or an iterable of tensors or (inputs, targets) batches (a DataLoader);
    batches are moved to the model's device and the average runs over all their rows.
    """
    device = next(model.parameters()).device
    batches = [x] if isinstance(x, Tensor) else x
    was_training = model.training
    model.eval()
    try:
        total, rows = None, 0
        for k, batch in enumerate(tqdm(batches, desc="attention JSD", disable=not progress)):
            if max_batches is not None and k >= max_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            sums, n = _jsd_sums(model.attention_maps(inputs.to(device)))
            total, rows = (sums if total is None else total + sums), rows + n
    finally:
        model.train(was_training)
    if total is None:
        raise ConfigError("no input batches given for the attention JSD")
    return _jsd_frame(total, rows)


# ---------------------------------------------------------------------------------------------
# (b) Hessian of a single self-attention layer
# ---------------------------------------------------------------------------------------------

BLOCKS = ("query", "key", "value")
PARTS = ("full", "gauss_newton", "functional")


def self_attention(X: Tensor, Wq: Tensor, Wk: Tensor, Wv: Tensor, kind: str = "softmax",
                   pre_ln: bool = False) -> Tensor:
    """One head of self-attention on X (n, T, d): A(X) X Wv with scores Q K^T / sqrt(d_k).

    kind="softmax": A = softmax(scores) over keys. kind="linear": A = scores, the softmax dropped
    (Ormaniec et al.'s linear self-attention, so the output is linear in each of Wq, Wk, Wv).
    pre_ln applies LayerNorm without affine parameters to X first.
    """
    if pre_ln:
        X = F_.layer_norm(X, X.shape[-1:])
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    scores = Q @ K.transpose(-1, -2) / math.sqrt(Wq.shape[-1])
    weights = scores.softmax(dim=-1) if kind == "softmax" else scores
    return weights @ V


def attention_problem(scale: float, *, d: int = 4, T: int = 5, n: int = 8, seed: int = 0):
    """(X, Y, W0): inputs X = scale * N(0, 1) of shape (n, T, d), targets Y ~ N(0, 1) and the
    initial weights (Wq, Wk, Wv) ~ N(0, 1/d), all float64. For one seed only X's scale changes
    with `scale`, so a sweep isolates the dependence on the input scale."""
    g = torch.Generator().manual_seed(seed)
    weights = tuple(torch.randn(d, d, generator=g, dtype=torch.float64) / d ** .5
                    for _ in BLOCKS)
    X = scale * torch.randn(n, T, d, generator=g, dtype=torch.float64)
    Y = torch.randn(n, T, d, generator=g, dtype=torch.float64)
    return X, Y, weights


def squared_error(out: Tensor, Y: Tensor) -> Tensor:
    """Half the squared error summed over features, averaged over the n*T tokens."""
    return 0.5 * ((out - Y) ** 2).sum() / (out.numel() // out.shape[-1])


def attention_hessian_blocks(scale: float, kind: str = "softmax", pre_ln: bool = False, *,
                             d: int = 4, T: int = 5, n: int = 8, seed: int = 0) -> dict:
    """Hessian of the squared-error loss of one self-attention layer w.r.t. (Wq, Wk, Wv).

    Returns a dict with
      "full", "gauss_newton", "functional": (P, P) float64 arrays, P = 3 d^2, parameters ordered
          vec(Wq), vec(Wk), vec(Wv) (row-major vec);
      "blocks": {part: {(row_block, col_block): array}} for blocks in query/key/value;
      "slices": {block: slice into the P parameters}; "loss": the loss value.
    The three parts are computed separately: full H by autograd, the Gauss-Newton part
    G = J^T H_out J (J = d outputs / d params, H_out = the loss Hessian in the outputs) and the
    functional part F = sum_o (dL/d out_o) * Hessian(out_o), as the Hessian of <g, out(theta)>
    with g = dL/d out held fixed. So H = G + F is a check, not a definition.
    """
    check_choice("kind", kind, ATTENTION_KINDS)
    X, Y, weights = attention_problem(scale, d=d, T=T, n=n, seed=seed)
    theta = torch.cat([w.reshape(-1) for w in weights])
    size = d * d

    def outputs(t: Tensor) -> Tensor:
        Wq, Wk, Wv = (t[k * size:(k + 1) * size].reshape(d, d) for k in range(3))
        return self_attention(X, Wq, Wk, Wv, kind, pre_ln)

    out = outputs(theta).detach()
    full = hessian(lambda t: squared_error(outputs(t), Y), theta, vectorize=True)
    J = jacobian(outputs, theta, vectorize=True).reshape(out.numel(), -1)
    H_out = hessian(lambda o: squared_error(o.reshape(out.shape), Y), out.reshape(-1),
                    vectorize=True)
    gauss_newton = J.T @ H_out @ J
    g = jacobian(lambda o: squared_error(o, Y), out)
    functional = hessian(lambda t: (g * outputs(t)).sum(), theta, vectorize=True)

    slices = {b: slice(k * size, (k + 1) * size) for k, b in enumerate(BLOCKS)}
    parts = {"full": full, "gauss_newton": gauss_newton, "functional": functional}
    parts = {name: m.numpy() for name, m in parts.items()}
    blocks = {name: {(r, c): m[slices[r], slices[c]] for r in BLOCKS for c in BLOCKS}
              for name, m in parts.items()}
    return {**parts, "blocks": blocks, "slices": slices,
            "loss": float(squared_error(out, Y))}


def attention_hessian_sweep(scales: Iterable[float], kinds: Iterable[str] = ATTENTION_KINDS,
                            pre_ln_options: Iterable[bool] = (False, True), *, d: int = 4,
                            T: int = 5, n: int = 8, seed: int = 0,
                            progress: bool = False) -> pd.DataFrame:
    """Frobenius norm of every (part, row_block, col_block) against the input scale; rows
    (scale, attention, pre_ln, part, row_block, col_block, frobenius). Plot log-log per block."""
    settings = [(float(s), k, bool(p)) for s in scales for k in kinds for p in pre_ln_options]
    rows = []
    for scale, kind, pre_ln in tqdm(settings, desc="attention Hessians", disable=not progress):
        result = attention_hessian_blocks(scale, kind, pre_ln, d=d, T=T, n=n, seed=seed)
        for part, blocks in result["blocks"].items():
            for (row, col), block in blocks.items():
                rows.append({"scale": scale, "attention": kind, "pre_ln": pre_ln, "part": part,
                             "row_block": row, "col_block": col,
                             "frobenius": float(np.linalg.norm(block))})
    return pd.DataFrame(rows)


def block_histograms(kinds: Iterable[str] = ATTENTION_KINDS, *, scale: float = 1.0,
                     pre_ln: bool = False, parts: Iterable[str] = PARTS, bins: int = 40,
                     value: str = "raw", d: int = 4, T: int = 5, n: int = 8,
                     seed: int = 0) -> pd.DataFrame:
    """Histograms of the entries of each Hessian block; rows (attention, part, block, bin_left,
    bin_right, count), block like "query-key".

    value="raw" bins the entries themselves; value="log10_abs" bins log10 |entry| (exact zeros,
    e.g. the whole value-value functional block, are left out). Within one part all blocks and
    kinds share bin edges, so their spreads compare directly.
    """
    check_choice("value", value, ("raw", "log10_abs"))
    parts = [check_choice("part", part, PARTS) for part in parts]
    entries = {}  # (kind, part, block name) -> 1-D array
    for kind in kinds:
        result = attention_hessian_blocks(scale, kind, pre_ln, d=d, T=T, n=n, seed=seed)
        for part in parts:
            for (row, col), block in result["blocks"][part].items():
                v = block.ravel()
                if value == "log10_abs":
                    v = np.log10(np.abs(v[v != 0]))
                entries[kind, part, f"{row}-{col}"] = v
    rows = []
    for part in parts:
        pooled = np.concatenate([v for (_, p, _), v in entries.items() if p == part] or [[0.0]])
        edges = np.histogram_bin_edges(pooled if pooled.size else [0.0], bins=bins)
        for (kind, p, block), v in entries.items():
            if p != part:
                continue
            counts, _ = np.histogram(v, bins=edges)
            rows += [{"attention": kind, "part": part, "block": block, "bin_left": lo,
                      "bin_right": hi, "count": int(c)}
                     for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    return pd.DataFrame(rows)
