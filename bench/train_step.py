"""One DETR-R50 training step, detrtool's against the reference implementation's, side by side.

    git clone https://github.com/facebookresearch/detr /tmp/detr-reference     # your copy, outside this repo
    python -m bench.train_step --reference /tmp/detr-reference --threads 2 --steps 5 [--amp bf16] [--json out.json]

The step is the reference's ``main.py`` defaults: DETR-R50 (sine, 6+6 layers, 100 queries, aux losses), AdamW
(lr 1e-4, backbone 1e-5, weight decay 1e-4), gradient clipping 0.1; a padded batch of two random images
(512x512 and 512x384) with 4 boxes each. Both models hold the same weights (the reference's random init,
copied into detrtool's model: the layouts are the same). Before timing, the two are run once in eval mode
(dropout off) on the batch: the weighted loss and the gradients must agree within float rounding (printed).
Then ``--steps`` rounds, each one reference step and one detrtool step (forward, criterion, backward, clip,
optimizer step), after one warm-up step each; the medians and their ratio are printed (and written with
``--json``). ``--amp bf16`` runs detrtool's step under CPU autocast (where the CPU runs bf16 natively) against
the reference's fp32 step. Nothing of the reference is copied here: it is imported from ``--reference``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision

from bench.run import load_average
from detr_core.atomic import atomic_write
from detr_core.config import LossConfig
from detr_core.data.batching import pad_images
from detr_core.hardware import detect
from detr_core.losses import build_criterion, weighted_total
from detr_core.registry import get_model
from detr_core.training.engine import Precision, _backward_step, compute_loss, conv_layout
from detr_core.training.optim import build_optimizer

SIZES = ((512, 512), (512, 384))
BOXES = 4


@contextlib.contextmanager
def reference_importable(folder: Path) -> Iterator[None]:
    """The reference's packages importable, its backbone built without downloading ImageNet weights (the
    random init is copied into both models anyway) and its torchvision version check satisfied."""
    original = torchvision.models.resnet50

    def resnet50(*args: Any, pretrained: bool = False, **kwargs: Any):
        return original(*args, weights=None, **kwargs)

    sys.path.insert(0, str(folder))
    torchvision.models.resnet50 = resnet50
    try:
        yield
    finally:
        torchvision.models.resnet50 = original
        sys.path.remove(str(folder))


def batch(seed: int = 0) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    images = [torch.randn(3, h, w, generator=gen) for h, w in SIZES]
    targets = []
    for _ in SIZES:
        centre = 0.2 + 0.6 * torch.rand(BOXES, 2, generator=gen)
        size = 0.05 + 0.3 * torch.rand(BOXES, 2, generator=gen)
        targets.append({"labels": torch.randint(1, 91, (BOXES,), generator=gen), "boxes": torch.cat([centre, size], 1)})
    return images, targets


def build_reference(folder: Path):
    with reference_importable(folder):
        from main import get_args_parser  # the reference's own defaults
        from models import build_model
        from util.misc import nested_tensor_from_tensor_list

        args = get_args_parser().parse_args(["--device", "cpu"])
        torch.manual_seed(0)
        model, criterion, _ = build_model(args)
    groups = [{"params": [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]},
              {"params": [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad],
               "lr": args.lr_backbone}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    return model, criterion, optimizer, nested_tensor_from_tensor_list


def build_detrtool(state: dict[str, torch.Tensor]):
    model = get_model("detr_resnet50")
    model.load_state_dict(state)
    criterion = build_criterion(LossConfig(), num_classes=91, dec_layers=6, aux_loss=True)
    return model, criterion, build_optimizer(model, lr=1e-4, lr_backbone=1e-5, weight_decay=1e-4)


def reference_step(model, criterion, optimizer, samples, targets) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        total = weighted_total(criterion(model(samples), targets), criterion.weight_dict)
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        return total.detach()

    return step


def detrtool_step(model, criterion, optimizer, images, mask, targets, precision: Precision) -> Callable[[], torch.Tensor]:
    batch_ = (conv_layout(images), mask, targets)  # as the training loop hands a batch to the model

    def step() -> torch.Tensor:
        total, _, problem = compute_loss(model, criterion, batch_, precision, criterion.weight_dict)
        if total is None:
            raise FloatingPointError(problem)
        _backward_step(total, optimizer, precision, 0.1)
        return total.detach()

    return step


def parity(ref, ours, samples, images, mask, targets) -> dict[str, float]:
    """Eval mode (dropout off): weighted totals and gradients of the two implementations, once."""
    totals, grads = [], []
    for (model, criterion, _), run in ((ref, lambda m: m(samples)), (ours, lambda m: m(images, mask))):
        model.eval()
        model.zero_grad()
        total = weighted_total(criterion(run(model), targets), criterion.weight_dict)
        total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        totals.append(float(total.detach()))
        model.train()
        model.zero_grad()
    a, b = grads
    rel = max(float((a[n] - b[n]).norm() / a[n].norm().clamp_min(1e-12)) for n in a)
    return {"reference_total": totals[0], "detrtool_total": totals[1], "total_abs_diff": abs(totals[0] - totals[1]),
            "max_grad_rel_diff": rel}


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(reference: Path, *, steps: int, threads: int, amp: str) -> dict[str, Any]:
    torch.set_num_threads(threads)
    ref_model, ref_criterion, ref_opt, nested = build_reference(reference)
    model, criterion, optimizer = build_detrtool(ref_model.state_dict())
    capability = detect()
    precision = Precision(torch.device("cpu"), amp, capability)
    images_list, targets = batch()
    samples = nested(images_list)
    images, mask = pad_images(images_list)
    check = parity((ref_model, ref_criterion, ref_opt), (model, criterion, optimizer), samples, images, mask, targets)
    ref_model.train()
    model.train()
    steps_fn = {"reference": reference_step(ref_model, ref_criterion, ref_opt, samples, targets),
                "detrtool": detrtool_step(model, criterion, optimizer, images, mask, targets, precision)}
    for fn in steps_fn.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in steps_fn}
    for _ in range(steps):
        for name, fn in steps_fn.items():
            times[name].append(timed(fn))
    medians = {k: 1000 * statistics.median(v) for k, v in times.items()}
    return {"cpu": capability.cpu.name, "isa": capability.cpu.isa_summary(), "threads": threads, "amp": amp,
            "steps": steps, "median_ms": medians, "times_ms": {k: [1000 * t for t in v] for k, v in times.items()},
            "speedup": medians["reference"] / medians["detrtool"], "parity": check,
            "torch": torch.__version__, "load_average": load_average()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of facebookresearch/detr")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--amp", choices=("none", "bf16"), default="none")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (args.reference / "models" / "detr.py").is_file():
        parser.error(f"--reference {args.reference}: not a facebookresearch/detr checkout (no models/detr.py)")
    result = run(args.reference, steps=args.steps, threads=args.threads, amp=args.amp)
    m, p = result["median_ms"], result["parity"]
    print(f"{result['cpu']} ({result['isa']}), {result['threads']} threads, load {result['load_average']}")
    print(f"parity (eval mode): weighted loss {p['reference_total']:.6f} vs {p['detrtool_total']:.6f}, "
          f"largest relative gradient difference {p['max_grad_rel_diff']:.2e}")
    print(f"training step, median of {result['steps']}: reference {m['reference']:.0f} ms, detrtool "
          f"{m['detrtool']:.0f} ms (amp {result['amp']}): {result['speedup']:.2f}x")
    if args.json:
        atomic_write(args.json, lambda f: json.dump(result, f, indent=2), binary=False)


if __name__ == "__main__":
    main()
