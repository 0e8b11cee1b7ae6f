"""The one place that turns (variant, CLIP, protocol, numerics) into a model, and its optimiser.

``build_model`` is used by training, evaluation and ``bench/`` alike (as timm's ``create_model``
is the one place that turns a name into a model). ``RetrievalModel.forward`` computes the whole
loss so DDP sees every parameter use inside its forward. ``build_optimizer_for`` groups the
parameters the way CLIP4Clip does (CLIP at lr x coef_lr, the rest at lr; no decay on biases).
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from harness import distributed as dist_utils
from harness.numerics import autocast, convert_weights_fp16
from harness.optim import build_optimizer, param_groups
from harness.train.config import Numerics, Optimizer, Protocol
from harness.backbone import load_clip
from variants import build_head, parse_variant_name
from variants import symmetric_infonce as _symmetric_infonce

__all__ = ["RetrievalModel", "build_model", "build_optimizer_for", "compile_parts", "freeze_clip",
           "frozen_clip_parameters", "is_clip_param", "load_backbone", "symmetric_infonce"]


def symmetric_infonce(logits: torch.Tensor) -> torch.Tensor:
    """Indirection so tests can inject a non-finite loss (``monkeypatch.setattr``)."""
    return _symmetric_infonce(logits)


class RetrievalModel(nn.Module):
    """CLIP (paper protocol; None in the frozen protocol) + the variant head, returning the loss.

    Loose types gather text features, ``video_local`` outputs and masks across ranks (the global
    batch); the tight type scores the local batch only, as CLIP4Clip does. ``emulate_gpus`` = G
    reproduces what G DDP ranks compute (PAPER.md §4.3): the gradient reaching everything before
    the gather is scaled by 1/G, and the tight loss is the mean of the per-group losses of G
    groups of B/G pairs (on W real ranks each rank holds G/W of the groups).
    """

    def __init__(self, head: nn.Module, clip: nn.Module | None = None,
                 numerics: str = Numerics.FAST.value, emulate_gpus: int = 1) -> None:
        super().__init__()
        self.clip = clip
        self.head = head
        self.numerics = str(numerics)
        self.emulate_gpus = int(emulate_gpus)

    def encode(self, video: torch.Tensor, mask: torch.Tensor, text: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels [B,T,3,S,S] + tokens [B,L] (or, frozen, features) -> frames [B,T,D], text [B,D]."""
        if self.clip is None:
            return video, text
        return self.clip.encode_frames(video), self.clip.encode_text(text)

    def local_groups(self) -> int:
        """How many emulated GPUs' batches this rank holds (G / real world size)."""
        world = dist_utils.dist_info().world_size
        if self.emulate_gpus % world:
            raise ValueError(f"emulate_gpus={self.emulate_gpus} is not a multiple of the {world} "
                             f"processes of this run")
        return self.emulate_gpus // world

    def forward(self, video: torch.Tensor, mask: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        with autocast(self.numerics, video.device):
            frames, txt = self.encode(video, mask, text)
            head = self.head
            if not head.loose:
                groups = self.local_groups()
                losses = [symmetric_infonce(head.similarity(t, f, m).float()) for t, f, m in
                          zip(txt.chunk(groups), frames.chunk(groups), mask.chunk(groups))]
                return torch.stack(losses).mean()
            pre = 1.0 / self.emulate_gpus
            local = dist_utils.scale_grad(head.video_local(frames, mask), pre)
            gathered = dist_utils.all_gather_with_grad(local)
            gmask = dist_utils.all_gather_with_grad(mask)
            gtext = dist_utils.all_gather_with_grad(dist_utils.scale_grad(txt, pre))
            v, _ = head.video_global(gathered, gmask)
            logits = head.loose_logits(gtext, v)
        return symmetric_infonce(logits.float())


# CLIP4Clip's loop (main_task_retrieval.py) keeps these trainable and freezes every other CLIP
# parameter, except resblocks with index >= freeze_layer_num (all of them at 0); PAPER.md §1.2.
_ALWAYS_TRAINED = ("ln_final.", "text_projection", "logit_scale", "visual.ln_post.", "visual.proj")


def frozen_clip_parameters(names: list[str], freeze_layer_num: int = 0) -> list[str]:
    """The CLIP parameters (OpenAI key layout) that CLIP4Clip's ``freeze_layer_num`` rule freezes.

    With 0 (the paper's setting) and a 2-D patch embedding these are the token and positional
    embeddings, the visual class/positional embeddings, ``conv1`` and ``ln_pre``.
    """
    frozen = []
    for name in names:
        if name.startswith(_ALWAYS_TRAINED):
            continue
        if name.startswith(("visual.transformer.resblocks.", "transformer.resblocks.")):
            if int(name.split(".resblocks.")[1].split(".")[0]) >= freeze_layer_num:
                continue
        frozen.append(name)
    return frozen


def freeze_clip(backbone: Any, freeze_layer_num: int = 0) -> list[str]:
    """Set ``requires_grad=False`` on the CLIP parameters CLIP4Clip freezes; returns their names.

    CLIP's own ``logit_scale`` is frozen too: here it lives in the head (``head.logit_scale``,
    initialised from CLIP's and trained at CLIP's learning rate, as CLIP4Clip trains it).
    """
    params = dict(backbone.model.named_parameters())
    names = frozen_clip_parameters(list(params), freeze_layer_num)
    for name in names:
        params[name].requires_grad_(False)
    if "logit_scale" in params:
        params["logit_scale"].requires_grad_(False)
    return names


def build_model(spec: Any, backbone: Any, *, protocol: Protocol | str, numerics: Numerics | str,
                num_frames: int, device: torch.device | str = "cpu", compile: bool = False,
                grad_checkpointing: bool = False, emulate_gpus: int = 1) -> RetrievalModel:
    """The model of one run: the variant head on ``backbone``'s width (+ a copy of CLIP in the
    paper protocol, with CLIP4Clip's frozen parameters, converted to fp16 under reference
    numerics)."""
    if isinstance(spec, str):
        spec = parse_variant_name(spec)
    text_init = backbone.text_init(4) if spec.temporal in ("seqTransf", "tightTransf") else None
    head = build_head(spec, num_frames=num_frames, embed_dim=backbone.embed_dim,
                      text_init=text_init, logit_scale_init=backbone.logit_scale_init)
    clip = None
    if Protocol(protocol) is Protocol.PAPER:
        clip = copy.deepcopy(backbone)
        clip.train()
        freeze_clip(clip)
        if Numerics(numerics) is Numerics.REFERENCE:
            convert_weights_fp16(clip.model)
        if grad_checkpointing:
            clip.model.set_grad_checkpointing(True)
    if compile:
        compile_parts(clip, head)
    return RetrievalModel(head, clip, Numerics(numerics).value, emulate_gpus).to(device)


def compile_parts(clip: Any | None, head: nn.Module) -> None:
    """``torch.compile`` the CLIP encoders and the head's temporal transformer/LSTM/cross encoder.

    In place, so parameter names (and checkpoints) stay those of the eager model. The gathering,
    masking and pooling glue between them stays eager: it is cheap and its shapes vary.
    """
    if clip is not None:
        clip.encode_frames = torch.compile(clip.encode_frames)  # type: ignore[method-assign]
        clip.encode_text = torch.compile(clip.encode_text)  # type: ignore[method-assign]
    for name in ("seq", "cross"):
        part = getattr(head, name, None)
        if isinstance(part, nn.Module):
            part.compile()


def is_clip_param(name: str, protocol: Protocol | str) -> bool:
    """CLIP's parameters train at lr x coef_lr. In CLIP4Clip ``logit_scale`` is CLIP's and trains
    at CLIP's lr; we keep that in the paper protocol. The frozen protocol has no CLIP group."""
    return Protocol(protocol) is Protocol.PAPER and (name.startswith("clip.") or name == "head.logit_scale")


def build_optimizer_for(model: RetrievalModel, *, kind: Optimizer | str, protocol: Protocol | str,
                        lr: float, coef_lr: float, weight_decay: float, warmup: float,
                        max_grad_norm: float, t_total: int, fused: bool = False
                        ) -> tuple[torch.optim.Optimizer, Any]:
    """(optimizer, scheduler or None) over the model's trainable parameters."""
    groups = param_groups(model.named_parameters(), lr=lr, coef_lr=coef_lr, weight_decay=weight_decay,
                          is_clip=lambda name: is_clip_param(name, protocol))
    return build_optimizer(Optimizer(kind).value, groups, t_total=t_total, warmup=warmup,
                           max_grad_norm=max_grad_norm, fused=fused)


def load_backbone(plan: Any, resources: Any) -> Any:
    """CLIP for ``plan``: from ``resources`` when this owner loaded the same file before."""
    if plan.weights is None:  # random tiny CLIP: seeded by the caller, never shared
        return load_clip(plan.backbone, None)
    st = plan.weights.stat()
    key = (plan.backbone, f"{plan.weights.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return resources.backbone(key, lambda: load_clip(plan.backbone, plan.weights))
