"""Architecture registry: shapes, option checking, and each ViT variant against an independent
re-computation from the model's own weights (float64, tiny models)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_lib.errors import ConfigError, UnknownNameError
from landscape_lib.models import MODELS, create_model, model_label, model_options

DIGITS = dict(in_channels=1, image_size=8, num_classes=10)
CIFAR = dict(in_channels=3, image_size=32, num_classes=10)
TINY_VIT = dict(dim=16, depth=3, heads=2, mlp_ratio=2.0)


def tiny_vit(data=DIGITS, **options):
    """A float64 ViT in eval mode; digits + patch 2 -> a 4x4 grid of 16 tokens."""
    options = {"patch_size": 2, **TINY_VIT, **options}
    torch.manual_seed(0)
    return create_model("vit", **data, **options).double().eval()


def images(data=DIGITS, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    size = data["image_size"]
    return torch.randn(batch, data["in_channels"], size, size, generator=g, dtype=torch.float64)


# ---- independent reference pieces (written from the formulas, not from the model code) ----

def layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def heads_qkv(x, attn, heads):
    """q, k, v (B, heads, T, d) from the fused qkv weight: rows [q; k; v], heads contiguous."""
    dim = x.shape[-1]
    W, b = attn.qkv.weight, attn.qkv.bias
    out = []
    for i in range(3):
        y = x @ W[i * dim:(i + 1) * dim].T + b[i * dim:(i + 1) * dim]
        out.append(y.reshape(*x.shape[:2], heads, dim // heads).transpose(1, 2))
    return out


def merge_project(o, attn):
    B, h, T, d = o.shape
    return o.transpose(1, 2).reshape(B, T, h * d) @ attn.proj.weight.T + attn.proj.bias


def softmax_attention(x, attn, heads):
    q, k, v = heads_qkv(x, attn, heads)
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return merge_project(w @ v, attn)


def mlp_ref(x, mlp):
    h = F.gelu(x @ mlp[0].weight.T + mlp[0].bias)
    return h @ mlp[2].weight.T + mlp[2].bias


def elu_plus_one(x):
    return torch.where(x > 0, x + 1, torch.exp(x))


def capture_block_inputs(model):
    """Forward pre-hooks storing each block's input tokens; returns (store, handles)."""
    store, handles = {}, []
    for i, block in enumerate(model.blocks):
        handles.append(block.register_forward_pre_hook(
            lambda mod, args, i=i: store.__setitem__(i, args[0])))
    return store, handles


# ---- registry and shapes ----

@pytest.mark.parametrize("data", [DIGITS, CIFAR], ids=["digits", "cifar"])
@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_gives_logits(name, data):
    # small widths keep this fast; the options themselves are tested below
    options = {"resnet18": {"width": 8}, "resnet18-noskip": {"width": 8},
               "vit": {"dim": 32, "depth": 2}}.get(name, {})
    model = create_model(name, **data, **options)
    x = images(data, batch=3).float()
    assert model(x).shape == (3, data["num_classes"])
    # channels_last input gives the same logits
    model.eval()
    y = model(x)
    y_cl = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y_cl, y, rtol=1e-4, atol=1e-5)


def test_registered_names():
    assert {"mlp", "cnn", "resnet18", "resnet18-noskip", "vit"} <= set(MODELS.names())
    with pytest.raises(UnknownNameError):
        create_model("vgg", **DIGITS)


def test_unknown_option_names_it_and_lists_accepted():
    with pytest.raises(ConfigError) as err:
        create_model("vit", **CIFAR, patchsize=4)
    msg = str(err.value)
    assert "patchsize" in msg
    for accepted in model_options("vit"):
        assert accepted in msg
    with pytest.raises(ConfigError, match="hidden"):
        create_model("cnn", **DIGITS, hidden=(3,))


def test_model_options_are_the_signature_defaults():
    assert model_options("mlp") == {"hidden": (256, 256), "activation": "relu"}
    assert model_options("resnet18") == {"width": 64}
    vit = model_options("vit")
    assert vit["patch_size"] == 4 and vit["windows"] is None and vit["pool"] == "mean"
    assert "in_channels" not in vit and "num_classes" not in vit


def test_model_label_shows_only_non_default_options():
    assert model_label("vit", {"windows": "default", "norm": "post"}) == "vit p4 local postLN"
    assert model_label("vit", {"patch_size": 2}) == "vit p2"
    assert model_label("mlp", {}) == "mlp"
    assert model_label("mlp", {"hidden": [256, 256]}) == "mlp"  # list == default tuple
    assert "gelu" in model_label("mlp", {"activation": "gelu"})
    with pytest.raises(ConfigError):
        model_label("vit", {"nope": 1})


@pytest.mark.parametrize("options, reason", [
    ({"patch_size": 3}, "divide"),
    ({"heads": 5}, "divide"),
    ({"windows": [2, 2]}, "blocks"),
    ({"stem": "conv", "windows": "default"}, "removes one block"),
    ({"residual_attention": True, "attention": "linear"}, "softmax"),
    ({"norm": "middle"}, "pre"),
    ({"attention": "cosine"}, "linear"),
    ({"stem": "conv", "patch_size": 6, "windows": None}, "power-of-two"),
])
def test_invalid_vit_options_raise_config_error(options, reason):
    data = dict(CIFAR, image_size=36) if options.get("patch_size") == 6 else CIFAR
    with pytest.raises(ConfigError, match=reason):
        create_model("vit", **data, **{"dim": 16, "heads": 2, **options})


def test_default_windows_fit_the_default_depth():
    model = create_model("vit", **CIFAR, dim=16, heads=2, windows="default")
    assert model.windows == [2, 2, 4, 4, 4, 8, 8, 8] and len(model.blocks) == 8


# ---- MLP / CNN ----

def test_mlp_matches_formula_for_each_activation():
    acts = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
            "leaky_relu": lambda z: torch.where(z > 0, z, 0.01 * z),
            "elu": lambda z: torch.where(z > 0, z, torch.exp(z) - 1),
            "silu": lambda z: z * torch.sigmoid(z)}
    x = images()
    for name, act in acts.items():
        model = create_model("mlp", **DIGITS, hidden=(7,), activation=name).double()
        first, last = model[1], model[3]
        h = act(x.flatten(1) @ first.weight.T + first.bias)
        torch.testing.assert_close(model(x), h @ last.weight.T + last.bias)
    with pytest.raises(ConfigError, match="swish"):
        create_model("mlp", **DIGITS, activation="swish")


def test_cnn_batch_norm_option():
    with_bn = create_model("cnn", **DIGITS, widths=(4, 8))
    without = create_model("cnn", **DIGITS, widths=(4, 8), batch_norm=False)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    convs = [m for m in without.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8] and all(c.bias is not None for c in convs)


# ---- ResNet-18 with and without skips ----

def test_resnet_blocks_with_and_without_skip():
    torch.manual_seed(0)
    plain = create_model("resnet18-noskip", **CIFAR, width=4).double().eval()
    res = create_model("resnet18", **CIFAR, width=4).double().eval()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)  # sliced to each block's in_channels
    for name in ("layer1.0", "layer2.0", "layer3.1"):
        b = plain.get_submodule(name)
        xin = x[:, :b.conv1.in_channels]
        main = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(xin)))))
        torch.testing.assert_close(b(xin), torch.relu(main))
        r = res.get_submodule(name)
        main = r.bn2(r.conv2(torch.relu(r.bn1(r.conv1(xin)))))
        skip = xin if isinstance(r.shortcut, nn.Identity) else r.shortcut[1](r.shortcut[0](xin))
        torch.testing.assert_close(r(xin), torch.relu(main + skip))
    # same parameters except the three 1x1 shortcut projections (conv + BN) of stages 2-4
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    projections = sum(4 * 2 ** i * 4 * 2 ** (i + 1) + 2 * 4 * 2 ** (i + 1) for i in range(3))
    assert n(res) - n(plain) == projections
    assert not any("shortcut" in name for name, _ in plain.named_modules())


# ---- ViT: tokens, stems ----

@pytest.mark.parametrize("patch", [2, 4, 8])
@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_patch_size_sets_token_count(patch, pool):
    model = tiny_vit(CIFAR, patch_size=patch, pool=pool)
    maps = model.attention_maps(images(CIFAR))
    tokens = (32 // patch) ** 2 + (pool == "cls")
    assert len(maps) == 3 and all(m.shape == (2, 2, tokens, tokens) for m in maps)


def test_digits_vit_has_16_tokens():
    maps = tiny_vit(DIGITS, patch_size=2).attention_maps(images())
    assert maps[0].shape[-1] == 16


@pytest.mark.parametrize("data, patch", [(CIFAR, 2), (CIFAR, 4), (CIFAR, 8), (DIGITS, 2)])
def test_conv_stem_reaches_patch_grid_and_drops_a_block(data, patch):
    model = tiny_vit(data, patch_size=patch, stem="conv", depth=4)
    assert len(model.blocks) == 3
    grid = data["image_size"] // patch
    assert model.stem(images(data)).shape == (2, 16, grid, grid)
    convs = [m for m in model.stem if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * (len(convs) - 1) + [(1, 1)]
    strides = [c.stride[0] for c in convs[:-1]]
    assert strides.count(2) == int(math.log2(patch)) and len(strides) >= 2
    assert strides == sorted(strides, reverse=True)  # stride 2 first, then stride 1
    for c in convs[1:-1]:  # channels double exactly at the stride-2 convs
        assert c.out_channels == c.in_channels * c.stride[0]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.stem) == len(convs) - 1
    assert tiny_vit(data, patch_size=patch, depth=4).blocks.__len__() == 4


# ---- ViT: attention maps ----

VARIANTS = [{}, {"attention": "linear"}, {"windows": [2, 4, 2]}, {"residual_attention": True},
            {"pool": "cls", "windows": [2, 2, 2]}, {"norm": "post"},
            {"attention": "linear", "windows": [2, 4, 8]}, {"stem": "conv", "depth": 4}]


@pytest.mark.parametrize("options", VARIANTS, ids=str)
def test_attention_maps_are_row_stochastic(options):
    model = tiny_vit(**options)
    x = images()
    maps, scores = model.attention_maps(x), model.attention_scores(x)
    assert len(maps) == len(scores) == len(model.blocks)
    for m, s in zip(maps, scores):
        assert m.shape == s.shape == (2, 2, model.num_tokens, model.num_tokens)
        assert (m >= 0).all()
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:-1], dtype=m.dtype))
    # the recorded (explicit) path computes the same logits as the fast forward
    h, _ = model.encode(x, record=True)
    pooled = h[:, 0] if options.get("pool") == "cls" else h.mean(1)
    torch.testing.assert_close(model.head(pooled), model(x))


def window_patches(grid, row, col, w):
    """The w x w neighbourhood of (row, col), shifted inside the grid at its borders."""
    w = min(w, grid)
    r0, c0 = (min(max(i - (w - 1) // 2, 0), grid - w) for i in (row, col))
    return torch.tensor([[r0 <= r < r0 + w and c0 <= c < c0 + w
                          for c in range(grid)] for r in range(grid)])


@pytest.mark.parametrize("attention", ["softmax", "linear"])
@pytest.mark.parametrize("window", [2, 4, None])
@pytest.mark.parametrize("record", [False, True])
def test_window_limits_first_block_receptive_field(attention, window, record):
    windows = None if window is None else [window, 8, 8]
    model = tiny_vit(attention=attention, windows=windows)  # 4x4 grid of 2x2 patches
    out = {}
    model.blocks[0].register_forward_hook(lambda m, a, o: out.__setitem__("h", o[0]))
    for row, col in [(0, 0), (1, 2), (3, 1)]:
        x = images().requires_grad_(True)
        model.attention_maps(x) if record else model(x)
        out["h"][:, row * 4 + col].sum().backward()
        # |gradient| summed over each 2x2 patch (and channel, batch) -> (4, 4) patch grid
        per_patch = x.grad.abs().sum((0, 1)).reshape(4, 2, 4, 2).sum((1, 3))
        inside = (torch.ones(4, 4, dtype=torch.bool) if window is None
                  else window_patches(4, row, col, window))
        assert (per_patch[~inside] == 0).all()
        assert (per_patch[inside] > 0).all()


def test_cls_token_is_global_under_windows():
    model = tiny_vit(pool="cls", windows=[2, 2, 2])
    m = model.attention_maps(images())[0]
    assert (m[..., 0, :] > 0).all() and (m[..., :, 0] > 0).all()  # cls row / column
    assert (m[..., 1, 1 + 15] == 0).all()  # corner token (0,0) never sees corner (3,3)


# ---- ViT: block formulas ----

@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_matches_pre_or_post_ln_formula(norm):
    model = tiny_vit(norm=norm)
    x = torch.randn(2, 16, 16, dtype=torch.float64)
    outs = {}
    for b in model.blocks:
        h = x
        if norm == "pre":
            y = h + softmax_attention(layer_norm(h, b.norm1), b.attn, 2)
            ref = y + mlp_ref(layer_norm(y, b.norm2), b.mlp)
        else:
            y = layer_norm(h + softmax_attention(h, b.attn, 2), b.norm1)
            ref = layer_norm(y + mlp_ref(y, b.mlp), b.norm2)
        for explicit in (False, True):
            torch.testing.assert_close(b(x, None, explicit)[0], ref)
        outs[b] = ref
    other = tiny_vit(norm="post" if norm == "pre" else "pre")
    other.load_state_dict(model.state_dict(), strict=False)  # post-LN has no final norm
    assert not torch.allclose(other.blocks[0](x)[0], model.blocks[0](x)[0])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_realformer_adds_previous_raw_scores(norm):
    model = tiny_vit(residual_attention=True, norm=norm)
    inputs, _ = capture_block_inputs(model)
    x = images()
    scores = model.attention_scores(x)
    maps = model.attention_maps(x)
    previous = torch.zeros_like(scores[0])
    for i, b in enumerate(model.blocks):
        h = layer_norm(inputs[i], b.norm1) if norm == "pre" else inputs[i]
        q, k, _ = heads_qkv(h, b.attn, 2)
        own = q @ k.transpose(-2, -1) / math.sqrt(8)
        torch.testing.assert_close(scores[i], own + previous)
        torch.testing.assert_close(maps[i], torch.softmax(own + previous, -1))
        previous = scores[i]
    plain = tiny_vit(norm=norm)
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(x), model(x))
    # without RealFormer the scores are each block's own
    inputs_plain, _ = capture_block_inputs(plain)
    s = plain.attention_scores(x)[1]
    h = inputs_plain[1]
    h = layer_norm(h, plain.blocks[1].norm1) if norm == "pre" else h
    q, k, _ = heads_qkv(h, plain.blocks[1].attn, 2)
    torch.testing.assert_close(s, q @ k.transpose(-2, -1) / math.sqrt(8))


def test_linear_attention_is_normalized_kernel_times_values():
    model = tiny_vit(attention="linear")
    captured = {}
    attn = model.blocks[1].attn
    attn.register_forward_pre_hook(lambda m, a: captured.__setitem__("x", a[0]))
    attn.register_forward_hook(lambda m, a, o: captured.__setitem__("out", o.out))
    x = images()
    maps = model.attention_maps(x)
    q, k, v = heads_qkv(captured["x"], attn, 2)
    kernel = elu_plus_one(q) @ elu_plus_one(k).transpose(-2, -1)
    torch.testing.assert_close(maps[1], kernel / kernel.sum(-1, keepdim=True))
    torch.testing.assert_close(captured["out"], merge_project(maps[1] @ v, attn))
    # the fast O(T) path gives the same attention output
    model(x)
    torch.testing.assert_close(captured["out"], merge_project(maps[1] @ v, attn))
    # same weights with softmax attention: different maps
    soft = tiny_vit(attention="softmax")
    soft.load_state_dict(model.state_dict())
    assert (soft.attention_maps(x)[0] - model.attention_maps(x)[0]).abs().max() > 1e-3


# ---- weights reachable by initializers; mixed precision ----

def test_vit_weight_matrices_are_linear_or_conv():
    model = tiny_vit(stem="conv", depth=4, pool="cls")
    owned = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    extra = {name for name, p in model.named_parameters()
             if p.dim() >= 2 and id(p) not in owned}
    assert extra == {"pos_embed", "cls_token"}
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


@pytest.mark.parametrize("options", [{}, {"windows": [2, 4, 8]}, {"attention": "linear"},
                                     {"residual_attention": True}], ids=str)
def test_vit_runs_under_bf16_autocast(options):
    model = tiny_vit(**options).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(images().float())
        maps = model.attention_maps(images().float())
    assert torch.isfinite(y).all() and y.shape == (2, 10)
    torch.testing.assert_close(maps[0].float().sum(-1), torch.ones(2, 2, 16), atol=2e-2,
                               rtol=0)
