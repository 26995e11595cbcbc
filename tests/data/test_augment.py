"""Caption-aware mirroring, focus-keeping random resized crops and colour jitter: reproducible from the generator."""

import pytest
import torch

from ldmkit.data.augment import augment_view, colour_jitter, may_mirror, mirror_caption, random_resized_crop


@pytest.mark.parametrize("caption, mirrored", [
    ("a dog to the left of a tree", "a dog to the right of a tree"),
    ("Left: a cat. Right: a dog", "Right: a cat. Left: a dog"),
    ("TURN LEFT", "TURN RIGHT"),
    ("the rightmost cat, left-handed", "the leftmost cat, right-handed"),
    ("walking leftwards", "walking rightwards"),
    ("a clockwise arrow, counter-clockwise and anticlockwise ones", "a counterclockwise arrow, clockwise and clockwise ones"),
    # word boundaries: not directions
    ("a bright light, leftover pizza, copyright, alright, righteous", "a bright light, leftover pizza, copyright, alright, righteous"),
    ("a dog on a beach", "a dog on a beach"),
])
def test_mirror_caption_swaps_whole_direction_words_keeping_case(caption, mirrored):
    assert mirror_caption(caption) == mirrored
    if "clockwise" not in caption:
        assert mirror_caption(mirror_caption(caption)) == caption  # a mirror twice is the identity


def test_may_mirror_rules():
    assert may_mirror(["a dog on the left"], {})  # the caption is mirrored with it
    assert may_mirror(["a circle"], {"position": "left"})
    assert not may_mirror(["a sign"], {"has_text": "true"})
    assert may_mirror(["a sign"], {"has_text": "false"})
    assert not may_mirror(["the west side of a house"], {})
    assert may_mirror(["a western saloon"], {})  # a style, not a direction


def test_random_resized_crop_keeps_the_focal_point_in_its_middle_half():
    h, w = 40, 60
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    image = torch.stack([xs, ys, xs * 0])  # channel 0 = x, channel 1 = y: a crop's content tells where it was
    g = torch.Generator().manual_seed(0)
    for focus in ((0.1, 0.1), (0.9, 0.5), (0.5, 0.95)):
        for _ in range(20):
            out = random_resized_crop(image, 0.5, focus, g)
            assert out.shape == image.shape
            x0, x1 = out[0].min().item(), out[0].max().item()
            y0, y1 = out[1].min().item(), out[1].max().item()
            fx, fy = focus[0] * w, focus[1] * h
            assert x0 - 1 <= fx <= x1 + 1 and y0 - 1 <= fy <= y1 + 1  # the focal point is inside the crop
    # and in its middle half when the image leaves room: a centred focus never sits near an edge
    for _ in range(20):
        out = random_resized_crop(image, 0.5, (0.5, 0.5), g)
        x0, x1 = out[0].min().item(), out[0].max().item()
        assert x0 + 0.2 * (x1 - x0) <= 30 <= x1 - 0.2 * (x1 - x0)
    torch.testing.assert_close(random_resized_crop(image, 1.0, (0.2, 0.2), g), image)


def test_colour_jitter_and_views_replay_from_the_generator():
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(colour_jitter(x, 0.0, g), x, atol=1e-6, rtol=0)
    jittered = colour_jitter(x, 0.5, g)
    assert not torch.allclose(jittered, x) and jittered.min() >= -1 and jittered.max() <= 1
    runs = [[augment_view(x, (0.5, 0.5), torch.Generator().manual_seed(7), crop_scale=0.6, jitter=0.2)
             for _ in range(2)] for _ in range(2)]
    torch.testing.assert_close(runs[0][0], runs[1][0])
    plain = augment_view(x, (0.5, 0.5), torch.Generator().manual_seed(7), crop_scale=1.0, jitter=0.0)
    torch.testing.assert_close(plain, x)
