"""Caption-aware flips and random crops: reproducible from the generator, off for evaluation."""

import pytest
import torch

from ldmkit.data.augment import AugmentConfig, augment, may_flip, random_crop


def image():
    return torch.arange(3 * 8 * 10, dtype=torch.float32).reshape(3, 8, 10)


def test_may_flip_rules():
    assert may_flip(["a dog on a beach"], {})
    assert not may_flip(["a dog on a beach", "a dog to the left of a tree"], {})
    assert not may_flip(["a cat, rightmost in the row"], {})
    assert not may_flip(["counterclockwise arrows button"], {})
    assert may_flip(["a bright light"], {})  # 'bright' is not 'right'
    assert not may_flip(["a sign"], {"has_text": "true"})
    assert may_flip(["a sign"], {"has_text": "false"})
    assert not may_flip(["a circle"], {"position": "left"})


def test_flip_only_when_allowed():
    config = AugmentConfig(flip_p=1.0, min_crop=1.0)
    g = torch.Generator().manual_seed(0)
    x = image()
    torch.testing.assert_close(augment(x, ["a dog"], {}, g, config), torch.flip(x, dims=(-1,)))
    torch.testing.assert_close(augment(x, ["a dog on the right"], {}, g, config), x)


def test_off_is_identity_and_same_seed_same_result():
    x = image()
    g = torch.Generator().manual_seed(1)
    torch.testing.assert_close(augment(x, ["a dog"], {}, g, AugmentConfig.off()), x)
    config = AugmentConfig(flip_p=0.5, min_crop=0.5)
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        runs.append([augment(x, ["a dog"], {}, g, config) for _ in range(5)])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, runs[0][0]) for a in runs[0][1:])


def test_random_crop_keeps_size_and_crops_a_window():
    x = image()
    g = torch.Generator().manual_seed(3)
    out = random_crop(x, 1.0, g)
    torch.testing.assert_close(out, x)
    out = random_crop(x, 0.5, g)
    assert out.shape == x.shape
    windows = [x[:, t:t + 4, l:l + 5] for t in range(5) for l in range(6)]
    resized = [torch.nn.functional.interpolate(w[None], size=(8, 10), mode="bilinear", antialias=True)[0]
               for w in windows]
    assert sum(torch.allclose(out, r) for r in resized) == 1
    # a constant image stays constant under crop + antialiased resize
    const = torch.full((3, 8, 10), 0.25)
    torch.testing.assert_close(random_crop(const, 0.6, g), const)
    with pytest.raises(ValueError):
        AugmentConfig(min_crop=0.0)
