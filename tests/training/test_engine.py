"""Engine and optimizer: one epoch trains, evaluation scores, the NaN guard, schedules, precision."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from detr_core.evaluation.ground_truth import coco_ground_truth, make_evaluator
from detr_core.hardware import Capability, CpuInfo
from detr_core.losses import build_criterion
from detr_core.training.distributed import DistInfo
from detr_core.training.engine import NonFiniteLossError, Precision, compute_loss, evaluate, train_one_epoch
from detr_core.training.optim import LrFactor, build_optimizer, build_scheduler
from detr_core.training.run import build_data, build_run_model, resolve_num_classes
from tests.training.helpers import make_tiny_shapes, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")  # training tests: 1 thread is ~20x faster on a loaded 2-core box


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = make_tiny_shapes(tmp_path_factory.mktemp("shapes"))
    config = tiny_config(root, tmp_path_factory.mktemp("out"))
    data = build_data(config, DistInfo())
    config = resolve_num_classes(config, data)
    return config, data


def _pieces(config, data):
    torch.manual_seed(0)
    model = build_run_model(config, torch.device("cpu"))
    criterion = build_criterion(config.loss, num_classes=config.model.num_classes, dec_layers=2, aux_loss=True)
    optimizer = build_optimizer(model, lr=1e-3, lr_backbone=1e-4, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, schedule="step", steps_per_epoch=2, epochs=1, lr_drop=10, warmup_steps=0)
    return model, criterion, optimizer, scheduler


def test_train_one_epoch_updates_weights_and_reports_stats(tiny_run):
    config, data = tiny_run
    model, criterion, optimizer, scheduler = _pieces(config, data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = train_one_epoch(model, criterion, data.train_loader, optimizer, scheduler, device=torch.device("cpu"),
                            epoch=0, weight_dict=criterion.weight_dict, progress=False)
    assert {"loss", "loss_ce", "loss_bbox", "loss_giou", "class_error", "lr", "images_per_s"} <= set(stats)
    assert all(math.isfinite(v) for v in stats.values())
    assert not torch.equal(before["class_embed.weight"], model.state_dict()["class_embed.weight"])
    assert scheduler.last_epoch == len(data.train_loader)


def test_evaluate_gives_losses_and_coco_numbers(tiny_run):
    config, data = tiny_run
    model, criterion, _, _ = _pieces(config, data)
    evaluator = make_evaluator(coco_ground_truth(data.val_set, config.data), "faster")
    stats, coco = evaluate(model, criterion, data.val_loader, device=torch.device("cpu"),
                           weight_dict=criterion.weight_dict, evaluator=evaluator, progress=False)
    assert "loss" in stats and math.isfinite(stats["loss"])
    assert len(coco["stats"]) == 12
    assert len(evaluator.results()) == len(data.val_set) * config.model.num_queries  # every query of every image


def test_non_finite_loss_stops_before_any_update(tiny_run):
    """A batch whose image holds NaN: the model's real outputs are NaN, the step stops before any update."""
    config, data = tiny_run
    model, criterion, optimizer, scheduler = _pieces(config, data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, mask, targets = next(iter(data.train_loader))
    images = images.clone()
    images[0, :, :8, :8] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, step 0: loss is not finite: the model's outputs hold "
                                                 r"NaN/inf \(pred_logits, pred_boxes"):
        train_one_epoch(model, criterion, [(images, mask, targets)], optimizer, scheduler, device=torch.device("cpu"),
                        epoch=3, weight_dict=criterion.weight_dict, progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(s for s in optimizer.state.values())  # no moment was ever stepped


def test_step_schedule_drops_after_lr_drop_epochs():
    factor = LrFactor("step", steps_per_epoch=10, total_steps=100, lr_drop=3)
    assert factor(29) == 1.0 and factor(30) == pytest.approx(0.1)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    factor = LrFactor("cosine", steps_per_epoch=10, total_steps=110, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5)
    assert factor(110) == pytest.approx(0.0)


def test_optimizer_has_backbone_and_transformer_groups(tiny_run):
    config, data = tiny_run
    model, _, optimizer, _ = _pieces(config, data)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["backbone"]["lr"] == 1e-4 and groups["transformer"]["lr"] == 1e-3
    assert all(g["weight_decay"] == 1e-4 for g in groups.values())
    n_backbone = sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)
    assert sum(p.numel() for p in groups["backbone"]["params"]) == n_backbone


def test_lr_backbone_zero_freezes_the_backbone(tiny_run):
    config, data = tiny_run
    model = build_run_model(config, torch.device("cpu"))
    optimizer = build_optimizer(model, lr=1e-3, lr_backbone=0.0, weight_decay=1e-4)
    assert len(optimizer.param_groups) == 1
    assert not any(p.requires_grad for p in model.backbone.parameters())


def _cpu(flags) -> Capability:
    return Capability(CpuInfo(name="faked", arch="x86_64", flags=frozenset(flags)), probes={})


def test_fp16_needs_cuda_and_cpu_bf16_needs_native_bf16():
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device"):
        Precision(torch.device("cpu"), "fp16")
    with pytest.raises(ValueError, match=r"--amp bf16: this CPU would run bf16 emulated, not natively \(CPU flags "
                                         r"lack AMX-BF16/AVX512-BF16/AVX-NE-CONVERT\)"):
        Precision(torch.device("cpu"), "bf16", _cpu({"avx2", "fma"}))
    assert Precision(torch.device("cpu"), "bf16", _cpu({"avx2", "avx512f", "avx512_bf16"})).scaler is None


def test_cpu_bf16_step_losses_are_near_fp32_on_the_reference_model(tiny_checkpoint_path, tiny_expected):
    """The tiny reference model's forward under CPU autocast bf16 (forced, so the maths is checked on any CPU;
    emulated bf16 is only slow): every loss within 1e-2 relative of fp32's, computed in fp32, finite grads."""
    from detr_core import load_checkpoint
    from detr_core.config import LossConfig

    criterion = build_criterion(LossConfig(), num_classes=7, dec_layers=2, aux_loss=True)
    results = {}
    for amp in ("none", "bf16"):
        model = load_checkpoint(tiny_checkpoint_path, nheads=4)
        native = _cpu({"avx512_bf16"})  # the check is the capability's; here the numbers are
        batch = (tiny_expected["padded"], tiny_expected["mask"], tiny_expected["targets"])
        total, losses, problem = compute_loss(model, criterion, batch, Precision(torch.device("cpu"), amp, native),
                                              criterion.weight_dict)
        assert not problem and total.dtype == torch.float32
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        results[amp] = {k: float(v.detach()) for k, v in losses.items()}
    assert results["none"]["loss_ce"] == pytest.approx(tiny_expected["losses"]["loss_ce"], abs=1e-4)
    for key, fp32 in results["none"].items():
        if key.startswith("loss_"):
            assert results["bf16"][key] == pytest.approx(fp32, rel=1e-2), key


def test_small_backbone_is_registered_with_stride_16():
    from detr_core.config import ModelConfig
    from detr_core.registry import build_model

    model = build_model(ModelConfig(backbone="small_cnn", hidden_dim=32, nheads=2, num_classes=3))
    features = model.backbone[0](torch.zeros(1, 3, 64, 96))
    assert features.shape == (1, 256, 4, 6) and model.backbone.stride == 16
    body_params = sum(p.numel() for p in model.backbone.parameters())
    assert 1.0e6 < body_params < 1.3e6


def test_gpu_amp_train_step(tiny_run, tmp_path: Path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    config, data = tiny_run
    device = torch.device("cuda")
    model = build_run_model(config, device)
    criterion = build_criterion(config.loss, num_classes=config.model.num_classes, dec_layers=2, aux_loss=True)
    optimizer = build_optimizer(model, lr=1e-3, lr_backbone=1e-4, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, schedule="step", steps_per_epoch=2, epochs=1, lr_drop=10, warmup_steps=0)
    for amp in ("bf16", "fp16"):
        stats = train_one_epoch(model, criterion.to(device), data.train_loader, optimizer, scheduler, device=device,
                                epoch=0, weight_dict=criterion.weight_dict, precision=Precision(device, amp),
                                progress=False)
        assert math.isfinite(stats["loss"])


def test_cpu_optimizer_is_the_fused_adamw_with_the_reference_update(tiny_run):
    """The fused kernel takes the same AdamW step as the per-tensor loop: weights after one step agree to 1e-3
    of the step size (lr 1e-3). Later steps amplify rounding where gradients are near Adam's eps."""
    config, data = tiny_run
    model, criterion, optimizer, _ = _pieces(config, data)
    assert optimizer.defaults["fused"] is True
    twin = copy.deepcopy(model)
    loop = torch.optim.AdamW([{"params": [p for n, p in twin.named_parameters() if p.requires_grad
                                          and not n.startswith("backbone.")], "lr": 1e-3},
                              {"params": [p for n, p in twin.named_parameters() if p.requires_grad
                                          and n.startswith("backbone.")], "lr": 1e-4}],
                             weight_decay=1e-4, foreach=False)
    images, mask, targets = next(iter(data.train_loader))
    for net, opt in ((model, optimizer), (twin, loop)):
        torch.manual_seed(0)  # the same dropout masks for both
        losses = criterion(net(images, mask), targets)
        opt.zero_grad()
        sum(losses[k] * w for k, w in criterion.weight_dict.items() if k in losses).backward()
        opt.step()
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
