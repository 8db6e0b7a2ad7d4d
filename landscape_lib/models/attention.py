"""Multi-head self-attention (softmax or linear), local-window masks and the transformer block.

Two code paths compute the same thing:
- the fast path (nothing recorded, no RealFormer) uses ``F.scaled_dot_product_attention``
  for softmax attention, and the O(T) form ``phi(q) (phi(k)^T v)`` for unmasked linear attention;
- the explicit path forms the (B, heads, T, T) score and weight matrices, which are then
  returned so that analyses can read them and RealFormer can carry the scores to the next layer.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTENTION_KINDS = ("softmax", "linear")
NORM_PLACEMENTS = ("pre", "post")


class AttentionResult(NamedTuple):
    out: Tensor                    # (B, T, dim) after the output projection
    scores: Tensor | None = None   # (B, heads, T, T) raw scores (explicit path only)
    weights: Tensor | None = None  # (B, heads, T, T) row-stochastic weights (explicit path only)


def window_starts(grid: int, window: int) -> Tensor:
    """First key index along one axis of each query index 0..grid-1: the query's window is
    keys start(i) .. start(i) + w - 1 with w = min(window, grid) and
    start(i) = clamp(i - floor((w - 1) / 2), 0, grid - w) (see `window_mask`)."""
    if grid < 1 or window < 1:
        raise ValueError(f"grid={grid} and window={window} must be positive integers")
    w = min(int(window), int(grid))
    return (torch.arange(grid) - (w - 1) // 2).clamp(0, grid - w)


def axis_window(grid: int, window: int) -> Tensor:
    """(grid, grid) bool: [query, key] True when the key lies in the query's window."""
    w = min(int(window), int(grid))
    start, keys = window_starts(grid, window), torch.arange(grid)
    return (keys[None, :] >= start[:, None]) & (keys[None, :] < start[:, None] + w)


def window_mask(grid: int, window: int, cls_token: bool = False) -> Tensor:
    """Boolean (T, T) mask of a sliding window on a grid x grid token map; True = may attend.
    Tokens are row-major; T = grid**2 (+1 with a cls token at index 0).

    Neighbourhood attention (Hassani et al., "Neighborhood Attention Transformer", CVPR 2023;
    NATTEN): every query attends to exactly min(w, grid) rows x min(w, grid) columns of keys, a
    window that slides with the query, like a w x w convolution kernel, and is shifted back
    inside the grid at the borders instead of being clipped. Along each axis the window is
    `window_starts` .. + w - 1: centred on the query for odd w; for even w one more key after
    the query than before it (the alignment of ``Conv2d(kernel_size=w, padding="same")``).
    w >= grid is global attention. So every token has w^2 keys, w = 1 is "attend to yourself",
    and sizes up to the grid all differ: on the 8 x 8 grid of patch 4 on CIFAR, the default
    schedule's 2, 4 and 8 are 2 x 2, 4 x 4 and 8 x 8 (= global) neighbourhoods. Sizes above the
    grid all mean global (on the 4 x 4 grid of patch 8, 4 and 8 coincide). A cls token is
    global: it attends to all tokens and all attend to it.
    """
    rows = axis_window(grid, window)
    near = (rows[:, None, :, None] & rows[None, :, None, :]).reshape(grid * grid, grid * grid)
    if cls_token:
        near = F.pad(near, (1, 0, 1, 0), value=True)
    return near


def linear_feature_map(x: Tensor) -> Tensor:
    """Katharopoulos et al. (2020) kernel feature map elu(x) + 1 (positive everywhere)."""
    return F.elu(x) + 1


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv Linear and an output Linear.

    ``kind="softmax"``: weights = softmax(q k^T / sqrt(d) [+ previous scores]); raw scores are the
    pre-softmax q k^T / sqrt(d) (+ previous layer's scores under RealFormer).
    ``kind="linear"``: weights = phi(q) phi(k)^T / row sum with phi = elu + 1; the "scores" are the
    unnormalized kernel values phi(q) phi(k)^T. Masked entries are excluded from the weights but
    kept in the returned raw scores.
    """

    def __init__(self, dim: int, heads: int, kind: str = "softmax"):
        super().__init__()
        self.heads, self.head_dim, self.kind = heads, dim // heads, kind
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def split_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, dim) -> q, k, v, each (B, heads, T, head_dim)."""
        B, T, _ = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def forward(self, x: Tensor, mask: Tensor | None = None, prev_scores: Tensor | None = None,
                explicit: bool = False) -> AttentionResult:
        q, k, v = self.split_qkv(x)
        if explicit or prev_scores is not None:
            out, scores, weights = self._explicit(q, k, v, mask, prev_scores)
        else:
            out, scores, weights = self._fast(q, k, v, mask), None, None
        B, _, T, _ = out.shape
        out = self.proj(out.transpose(1, 2).reshape(B, T, -1))
        return AttentionResult(out, scores, weights)

    def _fast(self, q, k, v, mask):
        if self.kind == "softmax":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if mask is not None:  # a masked kernel has no O(T) factorization
            return self._explicit(q, k, v, mask, None)[0]
        fq, fk = linear_feature_map(q), linear_feature_map(k)
        numerator = fq @ (fk.transpose(-2, -1) @ v)                   # (B, h, T, d)
        denominator = fq @ fk.sum(dim=-2, keepdim=True).transpose(-2, -1)  # (B, h, T, 1)
        return numerator / denominator

    def _explicit(self, q, k, v, mask, prev_scores):
        if self.kind == "softmax":
            scores = (q @ k.transpose(-2, -1)) * self.scale
            if prev_scores is not None:
                scores = scores + prev_scores
            logits = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
            weights = logits.softmax(dim=-1)
        else:
            scores = linear_feature_map(q) @ linear_feature_map(k).transpose(-2, -1)
            kernel = scores if mask is None else scores.masked_fill(~mask, 0.0)
            weights = kernel / kernel.sum(dim=-1, keepdim=True)
        return (weights.to(v.dtype) @ v), scores, weights


class Block(nn.Module):
    """Transformer encoder block, Pre-LN or Post-LN, with an optional local-window mask.

    pre:  y = x + attn(LN1(x));  out = y + mlp(LN2(y))
    post: y = LN1(x + attn(x));  out = LN2(y + mlp(y))
    The mask (None = global attention) is a non-persistent buffer, so it follows ``.to(device)``
    and is not part of the state dict (models with and without windows share weights).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, norm: str = "pre",
                 attention: str = "softmax", mask: Tensor | None = None):
        super().__init__()
        self.pre_norm = norm == "pre"
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, attention)
        self.norm2 = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor, prev_scores: Tensor | None = None,
                explicit: bool = False) -> tuple[Tensor, AttentionResult]:
        if self.pre_norm:
            res = self.attn(self.norm1(x), self.mask, prev_scores, explicit)
            x = x + res.out
            return x + self.mlp(self.norm2(x)), res
        res = self.attn(x, self.mask, prev_scores, explicit)
        x = self.norm1(x + res.out)
        return self.norm2(x + self.mlp(x)), res
