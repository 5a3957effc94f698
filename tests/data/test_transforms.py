"""The batched on-device transforms: Normalize and its inverse, RandomCrop (also out of a margin), CenterCrop,
RandomResizedCrop, RandomHorizontalFlip, Resize."""

import math

import pytest
import torch

from zoo_lightning.data.transforms import (
    CenterCrop,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
)


def _asymmetric(n: int = 64) -> torch.Tensor:
    """Each image holds its column index, so flips and shifts are visible in the values."""
    return (torch.arange(1, 9, dtype=torch.uint8) * 10).view(1, 1, 1, 8).expand(n, 3, 8, 8).contiguous()


def test_normalize_gives_float_and_inverts():
    normalize = Normalize([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    out = normalize(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    expected = (images.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(normalize.inverse(out), images.float() / 255)


def test_flip_mirrors_some_images_exactly_and_keeps_others():
    torch.manual_seed(0)
    images = _asymmetric()
    out = RandomHorizontalFlip()(images)
    flipped = (out == images.flip(3)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert (flipped | kept).all() and 10 < flipped.sum() < 54


def test_crop_translates_with_zero_padding():
    torch.manual_seed(0)
    images = _asymmetric()
    out = RandomCrop(padding=2)(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    shifted = 0
    for image in out:  # each row is the column ramp shifted by dx, zeros where the padding came in
        row = image[0, 4]
        nonzero = row[row > 0]
        assert torch.equal(torch.diff(nonzero.to(torch.int16)), torch.full((len(nonzero) - 1,), 10, dtype=torch.int16))
        shifted += int(not torch.equal(image, images[0]))
    assert shifted > 32  # 24 of 25 offsets move the image
    assert (out == 0).any()


def test_resize_to_image_size():
    x = torch.rand(2, 3, 96, 96)
    assert Resize(224)(x).shape == (2, 3, 224, 224)
    assert Resize(32)(x).shape == (2, 3, 32, 32)


def test_crop_is_the_padded_image_at_some_offset():
    """Each output equals the zero-padded input cut at one (dy, dx); the offsets vary across the batch."""
    torch.manual_seed(1)
    p = 4
    images = torch.randint(1, 256, (48, 3, 10, 12), dtype=torch.uint8)  # no zeros: zeros mean padding
    out = RandomCrop(padding=p)(images)
    padded = torch.nn.functional.pad(images, (p, p, p, p))
    offsets = set()
    for i in range(len(images)):
        matches = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 10, dx : dx + 12])
        ]
        assert len(matches) == 1
        dy, dx = matches[0]
        offsets.add(matches[0])
        # The zeros are exactly the padding that came in: |dy - p| rows and |dx - p| columns.
        zero_rows = (out[i] == 0).all(0).all(1).sum().item()
        zero_cols = (out[i] == 0).all(0).all(0).sum().item()
        assert (zero_rows, zero_cols) == (abs(dy - p), abs(dx - p))
    assert len(offsets) > 20


def test_normalized_images_invert_to_unit_range():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    images[0] = 0
    images[1] = 255
    normalize = Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])
    out = normalize(images)
    back = normalize.inverse(out)
    assert out.dtype == torch.float32 and back.min() == 0 and back.max() == 1
    torch.testing.assert_close(back * 255, images.float(), atol=1e-3, rtol=0)


def test_transforms_run_without_autograd():
    images = torch.rand(4, 3, 8, 8, requires_grad=True)
    for transform in (RandomCrop(2), RandomHorizontalFlip(), Resize(16), Normalize([0.5] * 3, [0.2] * 3)):
        out = transform(images)
        assert not out.requires_grad and out.grad_fn is None


def test_a_crop_out_of_a_margin_is_a_window_of_the_stored_image_at_any_offset():
    torch.manual_seed(2)
    images = torch.randint(0, 256, (64, 3, 14, 14), dtype=torch.uint8)
    out = RandomCrop(padding=0, size=10)(images)
    assert out.shape == (64, 3, 10, 10)
    offsets = set()
    for i in range(len(images)):
        (offset,) = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], images[i, :, dy : dy + 10, dx : dx + 10])
        ]
        offsets.add(offset)
    assert len(offsets) > 18  # of the 25 windows, most are drawn
    assert torch.equal(CenterCrop(10)(images), images[:, :, 2:12, 2:12])


def _draws(crop: RandomResizedCrop, n: int, height: int, width: int) -> tuple[torch.Tensor, ...]:
    top, left, box_h, box_w = crop.boxes(n, height, width).unbind(1)
    return top, left, box_h.double(), box_w.double()


@pytest.mark.parametrize("height, width", [(258, 258), (40, 90)])
def test_the_scale_augmentation_draws_areas_and_aspects_in_their_ranges(height, width):
    torch.manual_seed(3)
    crop = RandomResizedCrop(224, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    top, left, box_h, box_w = _draws(crop, 20000, height, width)
    area = height * width
    # A box's sides are rounded to whole pixels: the drawn area and ratio hold for sides within half a pixel of them.
    assert ((box_h + 0.5) * (box_w + 0.5) >= 0.08 * area).all() and ((box_h - 0.5) * (box_w - 0.5) <= area).all()
    assert ((box_w + 0.5) / (box_h - 0.5) >= 3 / 4).all() and ((box_w - 0.5) / (box_h + 0.5) <= 4 / 3).all()
    assert (top >= 0).all() and (left >= 0).all() and (top + box_h <= height).all() and (left + box_w <= width).all()
    share, aspect = box_h * box_w / area, box_w / box_h
    if height == width:  # the draws spread over the ranges: small and whole areas, log-uniform aspects around 1
        assert share.min() < 0.085 and share.max() > 0.95
        assert aspect.min() < 0.76 and aspect.max() > 1.3 and abs(aspect.log().mean()) < 0.02
    else:  # a wide strip: the largest boxes are as tall as the strip, at about the widest ratio allowed
        assert box_h.max() == 40 and share.max() >= 40 * 53 / area
    assert top.double().std() > 0 and left.double().std() > 0


def test_the_scale_augmentation_falls_back_to_the_centre_cut_to_the_nearest_ratio():
    crop = RandomResizedCrop(16, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3))
    # A 40 x 10 strip: no box of 90% of its area has a ratio within 3/4..4/3, so every draw falls back.
    top, left, box_h, box_w = crop.boxes(50, 10, 40).unbind(1)
    assert (box_h == 10).all() and (box_w == round(10 * 4 / 3)).all()
    assert (top == 0).all() and (left == (40 - 13) // 2).all()


def test_the_scale_augmentation_resizes_every_box_to_the_output_size():
    torch.manual_seed(4)
    images = torch.randint(0, 256, (6, 3, 30, 30), dtype=torch.uint8)
    out = RandomResizedCrop(12)(images)
    assert out.shape == (6, 3, 12, 12) and out.dtype == torch.uint8
    # The whole image at its own size is the image; a box of it at its own size is that box exactly.
    whole = RandomResizedCrop(30, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.equal(whole(images), images)
    box = RandomResizedCrop(15, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    torch.manual_seed(5)
    top, left, box_h, box_w = box.boxes(6, 30, 30).unbind(1)
    torch.manual_seed(5)
    out = box(images)
    assert (box_h == 15).all() and (box_w == 15).all()
    for i in range(6):
        assert torch.equal(out[i], images[i, :, top[i] : top[i] + 15, left[i] : left[i] + 15])
    # Shrinking averages (antialiased): a 2x2 checkerboard shrunk by 2 is its mean grey, not a sample of it.
    board = (torch.arange(16).view(4, 4) + torch.arange(16).view(4, 4).T) % 2 * 200
    half = RandomResizedCrop(2, scale=(1.0, 1.0), ratio=(1.0, 1.0))(board.to(torch.uint8).expand(1, 3, 4, 4))
    assert (half == 100).all()
    assert math.isclose(float(half.float().mean()), float(board.float().mean()))
