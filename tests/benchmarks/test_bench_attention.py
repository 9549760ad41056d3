"""Which attention implementation runs DETR-R50's forward pass faster at 800x800 (eval, CPU).

``sdpa`` (F.scaled_dot_product_attention, the default) vs ``torch`` (F.multi_head_attention_forward,
what nn.MultiheadAttention runs). Both share the parameters, so the outputs are compared too.
"""

from __future__ import annotations

import pytest
import torch

from detr_core import get_model
from detr_core.models.attention import ATTENTION_IMPLS


@pytest.fixture(scope="module")
def r50_state():
    torch.manual_seed(0)
    return get_model("detr_resnet50").state_dict()


@pytest.mark.parametrize("impl", ATTENTION_IMPLS)
def test_forward_800x800_by_attention_impl(benchmark, r50_state, impl):
    model = get_model("detr_resnet50", attention_impl=impl).eval()
    model.load_state_dict(r50_state)
    side = 256 if benchmark.disabled else 800
    images = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    benchmark.group = f"attention impl, DETR-R50 {side}x{side}"
    with torch.inference_mode():
        out = benchmark.pedantic(model, args=(images,), rounds=1 if benchmark.disabled else 5, warmup_rounds=1)
        reference = get_model("detr_resnet50", attention_impl="torch").eval()
        reference.load_state_dict(r50_state)
        expected = reference(images)
    assert (out["pred_logits"] - expected["pred_logits"]).abs().max() < 1e-4
