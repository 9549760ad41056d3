"""The same random-weight ``DetrForObjectDetection`` through transformers (eager, with ``pixel_mask``),
optimum's ONNX export in ONNX Runtime, and detrtool's ONNX (HF folder -> ``detr_core`` -> ``export``),
on a padded batch: max |Δ| of logits and boxes against transformers, and latency side by side.

    pip install -e '.[compare]'      # transformers < 4.58 (what optimum-onnx supports), timm, optimum-onnx
    HF_HUB_OFFLINE=1 python -m bench.compare_hf [--variant r50|tiny|both] [--runs N] [--threads T]

Models are built offline from a ``DetrConfig`` (timm backbone, ``use_pretrained_backbone=False``) with
weights drawn at a scale that keeps activations O(1) (a transformers-initialised ResNet gives near-zero
features, which would hide what the mask does). ``r50``: DETR-R50 (256-d, 6+6 layers, 100 queries) on
two images of 800x600 and 600x800 (H x W) padded into an 800x800 batch; ``tiny``: ResNet-18, 64-d, 2+2
layers on 128x96 and 96x128 in 128x128. optimum's graph takes ``pixel_values`` only (no mask input), so
it sees the padding as image content; detrtool's takes the mask. Latency: one call of each runtime per
round (round-robin), medians; the load average before and after is recorded. Results go to
``bench/results/compare_hf_<variant>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.latency import time_round_robin  # noqa: E402
from detr_core.atomic import atomic_write_text, temp_folder  # noqa: E402

VARIANTS = {
    "r50": {"backbone": "resnet50", "d_model": 256, "layers": 6, "ffn": 2048, "heads": 8, "queries": 100,
            "canvas": 800, "sizes": ((800, 600), (600, 800))},
    "tiny": {"backbone": "resnet18", "d_model": 64, "layers": 2, "ffn": 96, "heads": 4, "queries": 7,
             "canvas": 128, "sizes": ((128, 96), (96, 128))},
}
LABELS = {i: f"class_{i}" for i in range(91)}


def hf_model(spec: dict, *, seed: int = 0):
    """A random ``DetrForObjectDetection`` (eval mode) for ``spec``, built offline."""
    from transformers import DetrConfig, DetrForObjectDetection

    config = DetrConfig(use_timm_backbone=True, backbone=spec["backbone"], use_pretrained_backbone=False,
                        d_model=spec["d_model"], encoder_layers=spec["layers"], decoder_layers=spec["layers"],
                        encoder_ffn_dim=spec["ffn"], decoder_ffn_dim=spec["ffn"],
                        encoder_attention_heads=spec["heads"], decoder_attention_heads=spec["heads"],
                        num_queries=spec["queries"], id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(seed)
    return randomize_weights(DetrForObjectDetection(config).eval())


def randomize_weights(model: torch.nn.Module) -> torch.nn.Module:
    """Redraw every floating parameter and buffer of ``model`` in place (:func:`_draw`) at a scale that
    keeps activations O(1) through a DETR (with transformers' own init the outputs ignore the mask)."""
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            _draw(name, tensor)
    return model


def _draw(name: str, tensor: torch.Tensor) -> None:
    """Weights ~ N(0, 1/fan_in), BN variances in [0.5, 2], norm scales in [0.5, 1.5], biases ~ N(0, 0.1)."""
    if not tensor.is_floating_point():
        return
    if tensor.dim() > 1:
        tensor.normal_(0, tensor[0].numel() ** -0.5)
    elif name.endswith("running_var"):
        tensor.uniform_(0.5, 2.0)
    elif name.endswith("weight"):
        tensor.uniform_(0.5, 1.5)
    else:
        tensor.normal_(0, 0.1)


def padded_batch(spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised random images of ``spec["sizes"]`` (H, W) in the top-left of a square canvas, padding 0;
    ``mask`` [B, H, W] True on padding."""
    canvas = spec["canvas"]
    gen = torch.Generator().manual_seed(1)
    images = torch.zeros(len(spec["sizes"]), 3, canvas, canvas)
    mask = torch.ones(len(spec["sizes"]), canvas, canvas, dtype=torch.bool)
    for i, (h, w) in enumerate(spec["sizes"]):
        images[i, :, :h, :w] = torch.randn(3, h, w, generator=gen)
        mask[i, :h, :w] = False
    return images, mask


def build_runtimes(spec: dict, folder: Path, *, threads: int) -> dict:
    """``name -> callable(images, mask) -> (logits, boxes)`` for transformers, optimum and detrtool."""
    import onnxruntime as ort
    from optimum.exporters.onnx import main_export

    from bench.ort import session_options
    from detr_core import load_checkpoint
    from exporters import export, load_runtime

    model = hf_model(spec)
    model.save_pretrained(folder / "hf")
    main_export(str(folder / "hf"), output=str(folder / "optimum"), task="object-detection",
                no_post_process=True, do_validation=False)
    options = session_options(threads=threads)  # no spinning after a call: it would slow the next runtime
    optimum = ort.InferenceSession(str(folder / "optimum" / "model.onnx"), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    detr = load_checkpoint(folder / "hf")
    canvas = (spec["canvas"], spec["canvas"])
    export(detr, "onnx", folder / "static.onnx", input_size=canvas, batch_size=len(spec["sizes"]), validate=False)
    export(detr, "onnx", folder / "dynamic.onnx", input_size=canvas, dynamic=True, validate=False)
    static = load_runtime(folder / "static.onnx", session_options=session_options(threads=threads))
    dynamic = load_runtime(folder / "dynamic.onnx", session_options=session_options(threads=threads))

    def transformers_run(images, mask):
        with torch.inference_mode():
            out = model(pixel_values=images, pixel_mask=(~mask).long())
        return out.logits, out.pred_boxes

    def optimum_run(images, mask):
        logits, boxes = optimum.run(None, {"pixel_values": np.ascontiguousarray(images.numpy())})
        return torch.from_numpy(logits), torch.from_numpy(boxes)

    def detrtool(runtime):
        return lambda images, mask: tuple(runtime(images, mask).values())

    return {"transformers eager (pixel_mask)": transformers_run, "optimum ONNX (ORT, no mask input)": optimum_run,
            "detrtool ONNX static (ORT)": detrtool(static), "detrtool ONNX --dynamic (ORT)": detrtool(dynamic)}


def deltas(runtimes: dict, images: torch.Tensor, mask: torch.Tensor) -> dict[str, dict[str, float]]:
    """max |Δ| of logits and of boxes (normalised cxcywh, and in pixels of the canvas) against transformers."""
    outputs = {name: run(images, mask) for name, run in runtimes.items()}
    ref_logits, ref_boxes = outputs["transformers eager (pixel_mask)"]
    canvas = images.shape[-1]
    return {name: {"logits": float((logits - ref_logits).abs().max()),
                   "boxes": float((boxes - ref_boxes).abs().max()),
                   "boxes_px": float((boxes - ref_boxes).abs().max()) * canvas}
            for name, (logits, boxes) in outputs.items()}


def compare(variant: str, *, runs: int, threads: int) -> dict:
    spec = VARIANTS[variant]
    with temp_folder("compare-hf") as folder:
        runtimes = build_runtimes(spec, Path(folder), threads=threads)
        images, mask = padded_batch(spec)
        diffs = deltas(runtimes, images, mask)
        load_before = os.getloadavg()
        calls = {name: functools.partial(run, images, mask) for name, run in runtimes.items()}
        times = time_round_robin(calls, runs=runs, progress=True)  # rotating order, 2 warm-up rounds dropped
        load_after = os.getloadavg()
    latency = {name: statistics.median(values) for name, values in times.items()}
    return {"variant": variant, "spec": {k: v for k, v in spec.items()}, "batch": len(spec["sizes"]),
            "max_abs_diff": diffs, "median_ms": latency, "runs": runs, "load_before": load_before,
            "load_after": load_after}


def table(result: dict) -> str:
    spec = result["spec"]
    sizes = " and ".join(f"{h}x{w}" for h, w in spec["sizes"])
    lines = [f"{result['variant']}: {sizes} padded into {spec['canvas']}x{spec['canvas']}, batch {result['batch']}",
             "", "| runtime | max abs Δ logits | max abs Δ boxes (px) | p50 ms |", "|---|---:|---:|---:|"]
    for name, diff in result["max_abs_diff"].items():
        lines.append(f"| {name} | {diff['logits']:.2e} | {diff['boxes_px']:.2e} | {result['median_ms'][name]:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=["r50", "tiny", "both"], default="both")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output-dir", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime
    import optimum.version
    import transformers

    setup = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
             "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__,
             "optimum": optimum.version.__version__}
    for variant in (["tiny", "r50"] if args.variant == "both" else [args.variant]):
        result = compare(variant, runs=args.runs, threads=args.threads)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output_dir / f"compare_hf_{variant}.json",
                          json.dumps({"setup": setup, **result}, indent=1))
        print(table(result))
        print(f"load average before/after: {result['load_before']} / {result['load_after']}\n")


if __name__ == "__main__":
    main()
