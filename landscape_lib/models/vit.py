"""Vision transformer with the variants of docs/studies.md A-D, all selectable by options.

- patch size (A), patchify or convolutional stem (ViT_P / ViT_C, Xiao et al. 2021, B),
- Pre-LN or Post-LN blocks and RealFormer residual attention (He et al. 2020, C),
- softmax or linear attention (Katharopoulos et al. 2020, D),
- local sliding-window (neighbourhood) attention per block on the 2-D token grid (A): window w
  = the w x w tokens around each token, shifted inside the grid at its borders,
- mean-pooled tokens (default; windows stay strictly local) or a cls token (which is global:
  it attends to and is attended by every token, whatever the window).
Positional embeddings are learned.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from ..errors import ConfigError, check_choice
from .attention import ATTENTION_KINDS, NORM_PLACEMENTS, Block, window_mask
from .base import MODELS, model_options

STEMS = ("patchify", "conv")
POOLS = ("mean", "cls")
# docs/studies.md A: window sizes of the local ViT's 8 blocks (the receptive field widens with
# depth). A size w is a w x w neighbourhood that slides with each token (`attention.window_mask`):
# on the 8 x 8 patch grid of patch 4 on CIFAR, 2 x 2, 4 x 4 and 8 x 8 (= global); on the 4 x 4
# grid of patch 8, 4 and 8 are both global.
DEFAULT_WINDOWS = (2, 2, 4, 4, 4, 8, 8, 8)


def conv_stem(in_channels: int, dim: int, patch_size: int) -> nn.Sequential:
    """ViT_C stem: 3x3 conv-BN-ReLU layers, then a 1x1 conv to `dim`.

    log2(patch_size) stride-2 convs bring the image to the patch grid, followed by stride-1
    convs up to at least two 3x3 convs in all. Channels double at each stride-2 conv and stay
    at stride 1, ending at `dim` (as in Xiao et al.: e.g. 96 -> 192 for dim 192, patch 4).
    """
    n_down = int(math.log2(patch_size))
    if 2 ** n_down != patch_size:
        raise ConfigError(f"stem='conv' needs a power-of-two patch_size, got {patch_size}")
    layers: list[nn.Module] = []
    c_in = in_channels
    for i in range(max(n_down, 2)):
        stride = 2 if i < n_down else 1
        c_out = max(1, dim // 2 ** (n_down - min(i + 1, n_down)))
        layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    layers.append(nn.Conv2d(c_in, dim, 1))
    return nn.Sequential(*layers)


def resolve_windows(windows, n_blocks: int, stem: str) -> list[int] | None:
    """None, "default" or one window size per block -> list of ints (checked) or None."""
    if windows is None:
        return None
    if isinstance(windows, str):
        if windows != "default":
            raise ConfigError(f"windows={windows!r}: use null, 'default' or a list of ints")
        windows = DEFAULT_WINDOWS
    windows = list(windows)
    if len(windows) != n_blocks:
        why = " (stem='conv' removes one block)" if stem == "conv" else ""
        raise ConfigError(f"windows has {len(windows)} entries but the model has {n_blocks} "
                          f"blocks{why}; give one window size per block")
    if any(not isinstance(w, numbers.Integral) or isinstance(w, bool) or w < 1
           for w in windows):
        raise ConfigError(f"windows={windows}: every window size must be a positive integer")
    return [int(w) for w in windows]


class ViT(nn.Module):
    """Vision transformer; see the module docstring for the variants.

    ``attention_maps(x)`` / ``attention_scores(x)`` return one (B, heads, T, T) tensor per block:
    the row-stochastic attention weights and the raw scores (pre-softmax, after the RealFormer
    addition; for linear attention the unnormalized kernel phi(q) phi(k)^T). T counts the cls
    token (index 0) when pool="cls".
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int, patch_size: int = 4,
                 dim: int = 192, depth: int = 8, heads: int = 4, mlp_ratio: float = 2.0,
                 stem: str = "patchify", norm: str = "pre", attention: str = "softmax",
                 residual_attention: bool = False, windows=None, pool: str = "mean"):
        super().__init__()
        for option, value, allowed in (("stem", stem, STEMS), ("norm", norm, NORM_PLACEMENTS),
                                       ("attention", attention, ATTENTION_KINDS),
                                       ("pool", pool, POOLS)):
            check_choice(option, value, allowed)
        self._check_sizes(image_size, patch_size, dim, heads, mlp_ratio)
        if residual_attention and attention == "linear":
            raise ConfigError("residual_attention adds pre-softmax scores, so it needs "
                              "attention='softmax' (linear attention has no softmax)")
        n_blocks = depth - 1 if stem == "conv" else depth  # ViT_C trades one block for its stem
        if n_blocks < 1:
            raise ConfigError(f"depth={depth} leaves no transformer block with stem={stem!r}")
        windows = resolve_windows(windows, n_blocks, stem)

        self.grid = image_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.num_tokens = self.grid ** 2 + (pool == "cls")
        self.residual_attention, self.pool, self.windows = bool(residual_attention), pool, windows

        self.stem = (nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
                     if stem == "patchify" else conv_stem(in_channels, dim, patch_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        masks = ([None] * n_blocks if windows is None else
                 [window_mask(self.grid, w, cls_token=pool == "cls") for w in windows])
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, norm, attention, m)
                                    for m in masks)
        # Pre-LN leaves the residual stream unnormalized, so it gets a final LayerNorm.
        self.norm = nn.LayerNorm(dim) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(dim, num_classes)

    @staticmethod
    def _check_sizes(image_size, patch_size, dim, heads, mlp_ratio):
        if patch_size < 1 or image_size % patch_size:
            raise ConfigError(f"patch_size={patch_size} must divide image_size={image_size}")
        if heads < 1 or dim % heads:
            raise ConfigError(f"heads={heads} must divide dim={dim}")
        if mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio={mlp_ratio} must be positive")

    def embed(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> tokens (B, T, dim) with positional embeddings."""
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return tokens + self.pos_embed

    def encode(self, x: Tensor, record: bool = False):
        """Run the blocks; returns (normalized tokens, per-block AttentionResults if recorded)."""
        h = self.embed(x)
        explicit = record or self.residual_attention
        scores, results = None, []
        for block in self.blocks:
            h, res = block(h, scores if self.residual_attention else None, explicit)
            scores = res.scores
            if record:
                results.append(res)
        return self.norm(h), results

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.encode(x)
        pooled = h[:, 0] if self.pool == "cls" else h.mean(dim=1)
        return self.head(pooled)

    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """Per block (B, heads, T, T) attention weights; each row sums to 1."""
        return [r.weights for r in self.encode(x, record=True)[1]]

    def attention_scores(self, x: Tensor) -> list[Tensor]:
        """Per block (B, heads, T, T) raw scores (after the RealFormer addition when enabled)."""
        return [r.scores for r in self.encode(x, record=True)[1]]


def _vit_label(o: dict) -> list[str]:
    """Patch size always; other options only when they differ from the defaults."""
    defaults = model_options("vit")
    parts = [f"p{o['patch_size']}"]
    if o["stem"] == "conv":
        parts.append("convstem")
    for key, short in (("dim", "d"), ("depth", "L"), ("heads", "h"), ("mlp_ratio", "mlp")):
        if o[key] != defaults[key]:
            parts.append(f"{short}{o[key]:g}")
    if o["windows"] is not None:
        windows = DEFAULT_WINDOWS if o["windows"] == "default" else tuple(o["windows"])
        parts.append("local" if windows == DEFAULT_WINDOWS
                     else "local" + "-".join(str(w) for w in windows))
    if o["attention"] == "linear":
        parts.append("linear")
    if o["residual_attention"]:
        parts.append("realformer")
    if o["norm"] == "post":
        parts.append("postLN")
    if o["pool"] == "cls":
        parts.append("cls")
    return parts


@MODELS.register("vit", label=_vit_label)
def vit(*, in_channels: int, image_size: int, num_classes: int, patch_size: int = 4,
        dim: int = 192, depth: int = 8, heads: int = 4, mlp_ratio: float = 2.0,
        stem: str = "patchify", norm: str = "pre", attention: str = "softmax",
        residual_attention: bool = False, windows=None, pool: str = "mean") -> ViT:
    """Vision transformer (patch size, conv stem, pre/post LN, linear attn, RealFormer, windows).

    See ViT and the module docstring for what each option does.
    """
    return ViT(in_channels, image_size, num_classes, patch_size, dim, depth, heads, mlp_ratio,
               stem, norm, attention, residual_attention, windows, pool)
