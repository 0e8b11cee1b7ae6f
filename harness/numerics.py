"""Numerics modes of the paper protocol: ``fast`` and ``reference`` (PAPER.md §4.1 "Numerics").

* ``fast``: fp32 master weights; on CUDA the forward runs under bf16 autocast (PyTorch's fused
  SDPA attention does the rest); on CPU everything is fp32. Optimiser: bias-corrected AdamW.
* ``reference``: CLIP4Clip's ``convert_weights``: every Conv/Linear weight and bias, the
  attention in/out projections, ``text_projection`` and ``visual.proj`` of CLIP are cast to fp16
  and trained in fp16 (no master copy, no autocast, no loss scaling); LayerNorm computes in fp32
  and returns its input dtype (CLIP4Clip's LayerNorm subclass); embeddings, class/positional
  embeddings, ``logit_scale`` and the new head stay fp32. The activations entering the CLIP
  towers are cast to fp16 where CLIP4Clip casts them (pixels before ``conv1``, token+position
  embeddings before the text transformer), so the residual stream runs in fp16 as it does there.
  Optimiser: BertAdam.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "NUMERICS",
    "Fp32LayerNorm",
    "autocast",
    "convert_weights_fp16",
    "default_optimizer",
    "resolve_numerics",
]

NUMERICS = ("fast", "reference")


def resolve_numerics(numerics: str, device: torch.device | str) -> str:
    """``auto`` means ``fast``; anything else must be one of NUMERICS."""
    if numerics == "auto":
        return "fast"
    if numerics not in NUMERICS:
        raise ValueError(f"unknown numerics {numerics!r}; choose one of {', '.join(NUMERICS)}")
    return numerics


def default_optimizer(numerics: str) -> str:
    return "bertadam" if numerics == "reference" else "adamw"


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32, returned in the input dtype (CLIP4Clip ``module_clip.LayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig = x.dtype
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        out = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(orig)


def _cast_inputs_hook(dtype: torch.dtype):
    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    return hook


def convert_weights_fp16(model: nn.Module) -> nn.Module:
    """CLIP4Clip's ``convert_weights`` on an open_clip CLIP (or a module wrapping one), in place.

    Parameters keep their identity (``.data`` is replaced), so optimisers built afterwards see
    fp16 tensors. Also swaps every LayerNorm to :class:`Fp32LayerNorm` and installs input casts
    on ``conv1`` and on every ``transformer`` submodule so activations flow in fp16.
    """
    half = torch.float16

    def convert(layer: nn.Module) -> None:
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            layer.weight.data = layer.weight.data.to(half)
            if layer.bias is not None:
                layer.bias.data = layer.bias.data.to(half)
        if isinstance(layer, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                         "in_proj_bias", "bias_k", "bias_v"):
                tensor = getattr(layer, attr, None)
                if tensor is not None:
                    tensor.data = tensor.data.to(half)
        for name in ("text_projection", "proj"):
            attr = getattr(layer, name, None)
            if isinstance(attr, nn.Parameter):
                attr.data = attr.data.to(half)
        if isinstance(layer, nn.LayerNorm) and not isinstance(layer, Fp32LayerNorm):
            layer.__class__ = Fp32LayerNorm

    model.apply(convert)
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "conv1" or leaf == "transformer":
            module.register_forward_pre_hook(_cast_inputs_hook(half))
    return model


@contextlib.contextmanager
def autocast(numerics: str, device: torch.device) -> Iterator[None]:
    """bf16 autocast for ``fast`` on CUDA; a no-op otherwise (reference casts by itself)."""
    if numerics == "fast" and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield
