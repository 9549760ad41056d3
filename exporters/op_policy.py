"""Which operators a loaded artifact may call: one allowlist for TorchScript graphs and ``.pt2`` node targets.

An artifact's program is code from the file. TorchScript and torch.export can call any registered
operator, and some of them touch files or the process: ``aten::from_file`` maps a file read-write,
``aten::save`` writes one, ``debugprims::load_tensor`` reads one, ``profiler::*`` records, ``prim::Print``
writes to stdout, torchbind objects (``c10d`` stores, ...) are reached through ``prim::CallMethod``. So a
loaded program may call only the operators listed here, and anything else is refused before the program
runs (:func:`check_torchscript` walks every method's inlined graph, blocks included; :func:`check_pt2_target`
checks each node target of a ``.pt2``).

The rule, an allowlist by operator name (any overload):

- ``aten``: the operators detrtool's own exports contain — TorchScript ``script`` and ``trace``, static and
  dynamic, with and without post-processing, of the ``small_cnn``/``small_cnn_gn``/ResNet-18..101 backbones,
  sine and learned position embeddings, pre-norm, both attention implementations, torch.export static and
  dynamic, and the segmentation model's mask head (``einsum``, ``group_norm``, ``masked_fill``, ``softmax``,
  ``conv2d``, ``repeat``, ``upsample_nearest2d``: only ``einsum`` was added for it) — plus the families a DETR can need beyond those (elementwise math, reductions, shape and
  indexing, normalisation, pooling, convolution, matmul, attention, tensor creation, the Python builtins
  TorchScript lowers to ``aten``). None of them takes a file name or talks to anything but its tensors:
  ``tests/exporters/test_op_policy.py`` checks every allowed name against torch's own schemas
  (``torch._C._jit_get_all_schemas()``: no argument named like a file or a path, no I/O namespace);
- ``prim`` (TorchScript): constants, attribute reads, control flow, containers and casts; no call that
  survives inlining (``prim::CallMethod``/``prim::CallFunction`` then reach a torchbind or interface object),
  no object creation, no attribute write, no print;
- ``_operator`` (torch.export): integer arithmetic and comparisons over symbolic sizes.

A module defining ``__setstate__`` is refused before ``torch.jit.load`` (which would run it while
unpickling): :func:`check_torchscript_code` scans the archive's ``code/`` members.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from exporters.artifact_file import ArtifactError, read_member

ATEN_OPS: frozenset[str] = frozenset("""
    abs add add_ addmm alias all amax amin any arange argmax argmin argsort atan atan2 baddbmm batch_norm
    bitwise_and bitwise_not bitwise_or bmm broadcast_tensors cat ceil chunk clamp clamp_ clamp_max clamp_min
    clip clone contiguous conv1d conv2d convolution _convolution copy_ cos cumsum detach div div_ dropout
    dropout_ einsum embedding empty empty_like eq erf exp expand expand_as fill_ flatten flip floor floor_divide fmod
    full full_like gather ge gelu group_norm gt hardtanh index index_select instance_norm is_floating_point
    isfinite isinf isnan layer_norm le leaky_relu lift_fresh_copy linear linspace log log1p log_softmax
    logical_and logical_not logical_or lt masked_fill masked_fill_ matmul max max_pool2d
    max_pool2d_with_indices maximum mean meshgrid min minimum mm mul mul_ narrow native_batch_norm
    native_group_norm native_layer_norm ne neg new_empty new_full new_ones new_zeros norm ones ones_like pad
    permute pow reciprocal relu relu_ remainder repeat reshape round round_ rsqrt rsub scalar_tensor
    scaled_dot_product_attention select sigmoid sigmoid_ sign silu sin slice softmax sort split
    split_with_sizes sqrt squeeze stack sub sub_ sum t tanh topk transpose type_as unbind unflatten unsqueeze
    upsample_bicubic2d upsample_bilinear2d upsample_linear1d upsample_nearest1d upsample_nearest2d
    upsample_nearest3d upsample_trilinear3d _upsample_bicubic2d_aa _upsample_bilinear2d_aa
    _upsample_lanczos2d_aa _upsample_nearest_exact1d _upsample_nearest_exact2d _upsample_nearest_exact3d
    adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d avg_pool2d view view_as where zero_ zeros
    zeros_like to _to_copy _unsafe_view _softmax _log_softmax _native_batch_norm_legit_no_training
    _assert_tensor_metadata _assert_scalar sym_size sym_stride sym_numel sym_storage_offset item
    _local_scalar_dense
    Bool Float Int ScalarImplicit __and__ __contains__ __derive_index __getitem__ __is__ __isnot__ __not__
    __or__ __range_length _set_item append dict dim extend floordiv format insert items keys len list numel
    size values warn
""".split())
PRIM_OPS: frozenset[str] = frozenset("""
    Constant GetAttr If Loop ListConstruct ListUnpack TupleConstruct TupleUnpack TupleIndex DictConstruct
    NumToTensor RaiseException Uninitialized device dtype layout unchecked_cast isinstance min max
""".split())
OPERATOR_FUNCS: frozenset[str] = frozenset(
    "getitem add sub mul truediv floordiv mod neg pow eq ne lt le gt ge".split())
_TARGET = re.compile(r"torch\.ops\.aten\.(\w+)\.\w+|_operator\.(\w+)")
_SETSTATE = re.compile(rb"\b__setstate__\b")


class PolicyError(ArtifactError):
    """A loaded program that calls an operator outside the policy."""


def allows_kind(kind: str) -> bool:
    """A TorchScript node kind (``aten::conv2d``, ``prim::If``) the policy allows."""
    namespace, _, name = kind.partition("::")
    return (namespace == "aten" and name in ATEN_OPS) or (namespace == "prim" and name in PRIM_OPS)


def allows_target(target: str) -> bool:
    """A ``.pt2`` node target (``torch.ops.aten.conv2d.default``, ``_operator.add``) the policy allows."""
    match = _TARGET.fullmatch(target)
    if match is None:
        return False
    return match.group(1) in ATEN_OPS if match.group(1) else match.group(2) in OPERATOR_FUNCS


def refusal(path: Path, where: str, op: str) -> str:
    """The one line that refuses ``op`` found in ``where``."""
    return (f"{path}: refused to load: {where} calls {op}, which detrtool's op policy does not allow "
            "(an exported DETR never does; the op could touch files or the process)")


def check_torchscript_code(archive: zipfile.ZipFile, path: Path) -> None:
    """:class:`PolicyError` when a ``code/`` member defines or calls ``__setstate__`` (``torch.jit.load``
    would run it while unpickling the module, before any check of its graphs)."""
    for name in archive.namelist():
        if "/code/" in name and name.endswith(".py") and _SETSTATE.search(read_member(archive, name, path)):
            raise PolicyError(f"{path}: refused to load: archive member {name} defines __setstate__, which "
                              "torch.jit.load would run; a detrtool .ts never holds that")


def check_torchscript(module, path: Path) -> None:
    """Every node of every method's inlined graph (blocks included) of ``module`` and its submodules,
    forward hooks too, must be allowed; :class:`PolicyError` naming the method and the op otherwise."""
    for where, graph in _graphs(module):
        for kind in _kinds(graph.nodes()):
            if not allows_kind(kind):
                raise PolicyError(refusal(path, f"method {where}", kind))


def _graphs(module) -> Iterator[tuple[str, object]]:
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        for method in sub._c._method_names():
            yield prefix + method, sub._c._get_method(method).inlined_graph
        for hook in [*sub._c._get_forward_pre_hooks(), *sub._c._get_forward_hooks()]:
            yield f"{prefix}{hook.name} (hook)", hook.graph


def _kinds(nodes) -> Iterator[str]:
    for node in nodes:
        yield node.kind()
        for block in node.blocks():
            yield from _kinds(block.nodes())
