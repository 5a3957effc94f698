"""The batched on-device transforms: Normalize and its inverse, RandomCrop, RandomHorizontalFlip, Resize."""

import torch

from zoo_lightning.data.transforms import (
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
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
