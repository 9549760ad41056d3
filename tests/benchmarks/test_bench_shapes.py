"""Synthetic-shapes generation speed (images/s on one core, PNG writing included). Needs >= 200 img/s."""

from __future__ import annotations

import itertools
import json
import time

from detr_core.data import ShapesParams, generate_shapes

IMAGES_PER_ROUND = 200
MIN_IMAGES_PER_S = 200.0


def test_bench_shapes_generation(benchmark, tmp_path):
    params = ShapesParams(train_count=IMAGES_PER_ROUND, val_count=0)  # the default 128x128, 6 classes, 1-5 objects
    counter = itertools.count()

    def generate():
        generate_shapes(tmp_path / f"run{next(counter)}", params, progress=False)

    start = time.perf_counter()
    benchmark.pedantic(generate, rounds=3, iterations=1, warmup_rounds=1)
    last = tmp_path / f"run{next(counter) - 1}"  # every run writes the whole set (also under make test)
    written = json.loads((last / "annotations" / "instances_train2017.json").read_text())
    assert len(written["images"]) == IMAGES_PER_ROUND == len(list((last / "train2017").iterdir()))
    assert len(written["annotations"]) >= IMAGES_PER_ROUND  # 1-5 objects an image
    if benchmark.disabled:
        return
    seconds = benchmark.stats.stats.min
    rate = IMAGES_PER_ROUND / seconds
    benchmark.extra_info["images_per_s"] = round(rate, 1)
    benchmark.extra_info["image_size"] = params.image_size
    benchmark.extra_info["wall_s"] = round(time.perf_counter() - start, 2)
    assert rate >= MIN_IMAGES_PER_S, f"shapes generation {rate:.0f} img/s < {MIN_IMAGES_PER_S:.0f}"
