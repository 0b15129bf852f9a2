"""The ImageNet-style ops (raypair/ops/resized_crop.py) against independent references.

Boxes: an independent per-sample re-implementation of torchvision's ``RandomResizedCrop.get_params``
fed the same uniform draws picks the same boxes (including its fallback); the draw order is pinned;
on many draws every box keeps the area fraction in ``scale`` and the ratio in ``ratio`` (up to the
rounding of its sides). Pixels: for the same boxes the batched crop-and-resize equals torchvision's
``resized_crop(..., antialias=False)`` applied per sample (bilinear, align_corners=False). Float
images agree to 2e-3 (in 0..255 units): grid_sample's normalised float32 coordinates cost ~1e-5
px of position. uint8 images differ by at most one level from torchvision's float path rounded
(the same rounding; a value within ~1e-3 of a .5 may round the other way), on under 1% of pixels.
Evaluation's resize + centre crop equals torchvision's ``Resize`` + ``CenterCrop`` per image exactly.
"""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from helpers import gen
from raypair.ops import resized_crop as R


def reference_params(u_area, u_ratio, u_top, u_left, height, width, scale, ratio):
    """torchvision's get_params, one sample, with its ``torch.empty(1).uniform_`` and
    ``torch.randint`` replaced by the given uniforms (``a + u (b - a)``, ``floor(u n)``)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for k in range(10):
        target_area = area * (scale[0] + u_area[k] * (scale[1] - scale[0]))
        aspect_ratio = math.exp(log_ratio[0] + u_ratio[k] * (log_ratio[1] - log_ratio[0]))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def uniforms(n, seed):
    g = gen(seed)
    return [torch.rand(s, generator=g, dtype=torch.float64) for s in ((n, 10), (n, 10), (n,), (n,))]


@pytest.mark.parametrize("hw, scale, ratio", [
    ((256, 256), (0.08, 1.0), (3 / 4, 4 / 3)),
    ((40, 56), (0.08, 1.0), (3 / 4, 4 / 3)),
    ((300, 200), (0.5, 1.0), (0.5, 2.0)),
    ((64, 64), (0.95, 1.0), (3.0, 4.0)),  # no try fits: the fallback, clamped to the ratio range
    ((30, 90), (0.9, 1.0), (0.2, 0.25)),  # fallback of a wide image under a narrow ratio
])
def test_boxes_follow_get_params_on_the_same_draws(hw, scale, ratio):
    u = uniforms(512, seed=3)
    got = R.boxes_from_uniforms(*u, *hw, scale, ratio)
    want = [reference_params(u[0][i].tolist(), u[1][i].tolist(), u[2][i].item(), u[3][i].item(), *hw, scale, ratio)
            for i in range(512)]
    assert got.tolist() == [list(b) for b in want]


def test_draw_order_is_area_ratio_top_left_then_flip():
    g = gen(7)
    boxes = R.rrc_boxes(64, 50, 70, (0.08, 1), (3 / 4, 4 / 3), g)
    flip = torch.rand(64, generator=g) < 0.5
    assert torch.equal(boxes, R.boxes_from_uniforms(*uniforms(64, 7), 50, 70, (0.08, 1), (3 / 4, 4 / 3)))
    x = torch.randint(0, 256, (64, 3, 50, 70), dtype=torch.uint8, generator=gen(1))
    assert torch.equal(R.random_resized_crop_flip(x, 24, (0.08, 1), (3 / 4, 4 / 3), gen(7)),
                       R.resized_crop(x, boxes, 24, flip))


def test_box_distribution_on_many_draws():
    scale, ratio, h, w = (0.08, 1.0), (3 / 4, 4 / 3), 256, 256
    b = R.rrc_boxes(20000, h, w, scale, ratio, gen(11))
    top, left, bh, bw = b.unbind(1)
    assert ((top >= 0) & (left >= 0) & (top + bh <= h) & (left + bw <= w) & (bh > 0) & (bw > 0)).all()
    frac = (bh * bw).double() / (h * w)
    # sides rounded to whole pixels: area within (s +- 1/side) relative, ratio within +-1 px per side
    assert frac.min() >= scale[0] * (1 - 2 / 72) and frac.max() <= 1
    r = bw.double() / bh.double()
    assert r.min() >= ratio[0] * (1 - 1 / 70) and r.max() <= ratio[1] * (1 + 1 / 70)
    assert abs(frac.mean().item() - 0.5) < 0.05  # U(0.08, 1) less the rejected large, extreme boxes
    assert abs((top.double() / (h - bh).clamp_min(1)).mean().item() - 0.5) < 0.02  # corners uniform


def test_box_distribution_matches_torchvision_get_params():
    torch.manual_seed(0)
    tv = torch.tensor([v2.RandomResizedCrop.get_params(torch.zeros(3, 256, 256), [0.08, 1.0], [3 / 4, 4 / 3])
                       for _ in range(4000)], dtype=torch.float64)
    ours = R.rrc_boxes(4000, 256, 256, (0.08, 1.0), (3 / 4, 4 / 3), gen(5)).double()
    for k in range(4):  # mean and sd of top, left, h, w within 4 standard errors
        se = math.sqrt(2 / 4000) * tv[:, k].std()
        assert abs(tv[:, k].mean() - ours[:, k].mean()) < 4 * se + 1e-9


def digits_images(n, h, w):
    """Real scans (scikit-learn's digits) enlarged to ``h x w``, RGB uint8."""
    from sklearn.datasets import load_digits

    d = torch.tensor(load_digits().images[:n], dtype=torch.float32)[:, None] * (255 / 16)
    x = torch.nn.functional.interpolate(d, size=(h, w), mode="bicubic", align_corners=False)
    return x.clamp(0, 255).round().to(torch.uint8).expand(n, 3, h, w).contiguous()


@pytest.mark.parametrize("size", [24, 96])  # a downscaling and an upscaling crop size
def test_resized_crop_equals_torchvision_per_sample(size):
    x = torch.cat([digits_images(32, 40, 56),
                   torch.randint(0, 256, (32, 3, 40, 56), dtype=torch.uint8, generator=gen(2))])
    g = gen(9)
    boxes = R.rrc_boxes(64, 40, 56, (0.08, 1), (3 / 4, 4 / 3), g)
    flip = torch.rand(64, generator=g) < 0.5

    def ref(img):
        out = torch.stack([TF.resized_crop(img[i], *boxes[i].tolist(), [size, size], antialias=False)
                           for i in range(64)])
        return torch.where(flip[:, None, None, None], out.flip(-1), out)

    xf = x.float()
    assert (R.resized_crop(xf, boxes, size, flip) - ref(xf)).abs().max() < 2e-3
    d = (R.resized_crop(x, boxes, size, flip).float() - ref(xf).round()).abs()
    assert d.max() <= 1 and (d > 0).float().mean() < 0.01


@pytest.mark.parametrize("hw, resize, crop", [((256, 256), 256, 224), ((40, 56), 32, 28), ((90, 60), 64, 64)])
def test_resize_center_crop_equals_torchvision_per_image(hw, resize, crop):
    x = torch.cat([digits_images(4, *hw), torch.randint(0, 256, (4, 3, *hw), dtype=torch.uint8, generator=gen(4))])
    tv = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])
    for img in (x, x.float()):
        assert torch.equal(R.resize_center_crop(img, resize, crop), torch.stack([tv(i) for i in img]))


def test_bad_arguments_raise_with_the_value():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"scale .*got \(0.5, 0.1\)"):
        R.rrc_boxes(2, 8, 8, (0.5, 0.1), (3 / 4, 4 / 3), gen(0))
    with pytest.raises(ValueError, match=r"ratio .*got \(0, 1\)"):
        R.rrc_boxes(2, 8, 8, (0.1, 1), (0, 1), gen(0))
    with pytest.raises(ValueError, match=r"boxes \[B, 4\]"):
        R.resized_crop(x, torch.zeros(3, 4, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="crop_size must be <= resize_size"):
        R.resize_center_crop(x, 4, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu():
    x = digits_images(16, 64, 64)
    boxes = R.rrc_boxes(16, 64, 64, (0.08, 1), (3 / 4, 4 / 3), gen(3, "cuda"))
    d = (R.resized_crop(x.cuda(), boxes, 32).cpu().float() - R.resized_crop(x, boxes.cpu(), 32).float()).abs()
    assert d.max() <= 1 and (d > 0).float().mean() < 0.01
