"""ImageCache and ``cache_images``: the same samples as reading the files, each file decoded once."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from detr_core.data import CocoDetection
from detr_core.data.coco import load_rgb_tensor
from detr_core.data.image_cache import ImageCache
from detr_core.data.transforms import make_eval_transforms
from tests.data import write_coco
from tests.data.test_coco import ANNS, IMAGES


def test_cache_decodes_each_file_once(tmp_path):
    coco = write_coco(tmp_path, IMAGES, ANNS)
    calls = []

    def decode(path):
        calls.append(path)
        return load_rgb_tensor(path)

    cache = ImageCache(decode, enabled=True)
    path = coco[0] / "a.png"
    first, second = cache.load(path), cache.load(path)
    assert calls == [path] and first is second and first.dtype == torch.uint8 and first.shape == (3, 40, 60)
    assert len(cache) == 1 and cache.nbytes == 3 * 40 * 60
    off = ImageCache(decode, enabled=False)
    off.load(path)
    off.load(path)
    assert len(calls) == 3 and len(off) == 0


def test_cached_dataset_gives_the_same_samples_under_random_transforms(tmp_path):
    coco = write_coco(tmp_path, IMAGES, ANNS)
    flips = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.RandomVerticalFlip(p=1.0),
                        *make_eval_transforms(size=50, max_size=None).transforms])
    plain = CocoDetection(*coco, transforms=flips)
    cached = CocoDetection(*coco, transforms=flips, cache_images=True)
    for _ in range(2):  # the second pass reads the kept tensors: the transforms must not have changed them
        for i in range(len(plain)):
            (a, ta), (b, tb) = plain[i], cached[i]
            torch.testing.assert_close(a, b, rtol=0, atol=0)
            torch.testing.assert_close(ta["boxes"], tb["boxes"], rtol=0, atol=0)
            assert ta["size"].tolist() == tb["size"].tolist()
    assert plain[0][1]["size"].tolist() == [50, 75]
    assert len(cached.images) == 2 and len(plain.images) == 0
