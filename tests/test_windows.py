"""Window sizes of the local ViT (issue 10 item 9, acceptance 6): neighbourhood attention, in
which every size of the default schedule gives a different mask."""
import pytest
import torch

from landscape_lib.models.vit import DEFAULT_WINDOWS
from landscape_lib.models.attention import window_mask


def keys(mask, grid, r, c):
    """The (row, col) keys that query (r, c) may attend."""
    row = mask[r * grid + c]
    return {(int(k) // grid, int(k) % grid) for k in torch.nonzero(row).flatten()}


def square(rows, cols):
    return {(r, c) for r in rows for c in cols}


# Worked by hand on a 4 x 4 grid from start(i) = clamp(i - (w-1)//2, 0, 4 - w):
#   w=2: starts 0,1,2,2 -> row windows {0,1} {1,2} {2,3} {2,3}
#   w=3: starts 0,0,1,1 -> row windows {0,1,2} {0,1,2} {1,2,3} {1,2,3}
HAND = {
    (1, (0, 0)): square([0], [0]),
    (1, (2, 1)): square([2], [1]),
    (2, (0, 0)): square([0, 1], [0, 1]),
    (2, (1, 2)): square([1, 2], [2, 3]),
    (2, (3, 3)): square([2, 3], [2, 3]),      # shifted inside at the corner, still 2 x 2
    (2, (3, 0)): square([2, 3], [0, 1]),
    (3, (0, 0)): square([0, 1, 2], [0, 1, 2]),
    (3, (1, 1)): square([0, 1, 2], [0, 1, 2]),  # centred
    (3, (2, 3)): square([1, 2, 3], [1, 2, 3]),
    (4, (0, 0)): square(range(4), range(4)),  # w = G: global
    (4, (2, 1)): square(range(4), range(4)),
    (8, (1, 2)): square(range(4), range(4)),  # w > G: global too
}


@pytest.mark.parametrize("w, token", list(HAND))
def test_hand_worked_4x4_windows(w, token):
    assert keys(window_mask(4, w), 4, *token) == HAND[(w, token)]


@pytest.mark.parametrize("w", [1, 2, 3, 4])
def test_every_token_has_exactly_w_squared_keys_and_sees_itself(w):
    mask = window_mask(4, w)
    assert mask.sum(1).tolist() == [w * w] * 16
    assert mask.diagonal().all()


def test_default_schedule_sizes_all_give_different_masks_on_the_8x8_patch_grid():
    # patch 4 on 32 x 32 CIFAR images: an 8 x 8 token grid
    masks = {w: window_mask(8, w) for w in sorted(set(DEFAULT_WINDOWS))}
    sizes = list(masks)
    for i, a in enumerate(sizes):
        for b in sizes[i + 1:]:
            assert not torch.equal(masks[a], masks[b]), (a, b)
        assert masks[a].sum(1).tolist() == [a * a] * 64  # a x a keys for every query
    assert masks[8].all()  # w = 8 on 8 x 8 is global for every token, not "9 x 9"
    assert not torch.equal(window_mask(8, 2), window_mask(8, 3))  # the old 2 == 3 collision


@pytest.mark.parametrize("w", [2, 3, 4, 5])
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_unclamped_windows_match_a_same_padded_convolution(w):
    """Away from the borders the window is the receptive field of Conv2d(w, padding='same')."""
    g = 12
    mask = window_mask(g, w)
    conv = torch.nn.Conv2d(1, 1, w, padding="same", bias=False)
    torch.nn.init.ones_(conv.weight)
    lo, hi = (w - 1) // 2, g - w + (w - 1) // 2  # queries whose window is not shifted
    for kr, kc in [(5, 5), (6, 4)]:
        image = torch.zeros(1, 1, g, g)
        image[0, 0, kr, kc] = 1.0
        with torch.no_grad():
            sees = conv(image)[0, 0] > 0  # queries whose receptive field holds the key
        for qr in range(lo, hi + 1):
            for qc in range(lo, hi + 1):
                assert bool(mask[qr * g + qc, kr * g + kc]) == bool(sees[qr, qc])


def test_cls_token_stays_global():
    mask = window_mask(4, 2, cls_token=True)
    assert mask.shape == (17, 17) and mask[0].all() and mask[:, 0].all()
    assert torch.equal(mask[1:, 1:], window_mask(4, 2))


def test_vit_blocks_get_the_new_masks():
    import landscape_lib.models.vit as vit
    model = vit.vit(in_channels=3, image_size=32, num_classes=10, patch_size=4, dim=16,
                    heads=2, windows="default")
    per_block = [int(b.mask.sum(1)[0]) for b in model.blocks]
    assert per_block == [w * w for w in DEFAULT_WINDOWS]
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
