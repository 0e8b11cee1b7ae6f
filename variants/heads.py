"""The retrieval head of one variant: everything of EA-CLIP4Clip that is not CLIP (PAPER.md §3).

Notation: N = L2-normalisation over D, M = masked mean sum_i m_i X_i / max(sum_i m_i, 1),
S = sequential module including its residual, E = excitation, A = aggregation.

=========================  ===========================  =========================
row (authors' se_type)     meanP                        seqLSTM / seqTransf
=========================  ===========================  =========================
baseline                   N(M(N(V)))                   N(M(N(S(V))))
excitation                 N(M(E(N(V))))                N(M(E(N(S(V)))))
aggregation                N(A(N(V)))                   N(A(N(S(V))))
excitation_aggregation     N(A(E(N(V))))                N(A(E(N(S(V)))))
excitation_seq             --                           N(M(N(S(E(V)))))
excitation_seq_aggregation --                           N(A(S(E(V))))   (A on raw S output)
=========================  ===========================  =========================

tightTransf: logit = cross([t ; E(V)]) with E on the raw CLIP frame features.

All-gather boundary (``video_local`` runs before it, ``video_global`` after): as in CLIP4Clip's
``_loose_similarity``, the sequential module (and, for ``excitation_seq*``, the excitation in
front of it) runs on the local batch; normalisation, the post-seq E/A blocks and pooling run on
the gathered batch. Forward values do not depend on where the boundary is.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from variants.blocks import AggregationBlock, ExcitationBlock, block_params
from variants.spec import VariantSpec, parse_variant_name
from variants.temporal import CONTEXT_LENGTH, NUM_LAYERS, CrossEncoder, SeqLSTM, SeqTransf, TextTowerInit

LOGIT_SCALE_MAX = math.log(100.0)
DEFAULT_PAIR_CHUNK = 8192  # tightTransf pairs evaluated per cross-encoder call


def l2n(x: Tensor) -> Tensor:
    """N(x) = x / ||x||_2 over the last dimension (eps only guards all-zero vectors)."""
    return F.normalize(x, dim=-1, eps=1e-12)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """M(X, m) = sum_i m_i X_i / max(sum_i m_i, 1) over the frame axis: [B,T,D] -> [B,D]."""
    m = mask.to(x.dtype)
    return (x * m.unsqueeze(-1)).sum(dim=1) / m.sum(dim=1, keepdim=True).clamp_min(1.0)


def symmetric_infonce(logits: Tensor) -> Tensor:
    """(CE(S) + CE(S^T)) / 2 with the diagonal as positives (CLIP4Clip ``CrossEn``)."""
    if logits.dim() != 2 or logits.size(0) != logits.size(1):
        raise ValueError(f"symmetric_infonce needs a square [B, B] matrix, got {tuple(logits.shape)}")
    target = torch.arange(logits.size(0), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


class RetrievalHead(nn.Module):
    """Head of one variant; see the module docstring for the math of every row."""

    def __init__(
        self,
        spec: VariantSpec,
        num_frames: int,
        embed_dim: int,
        text_init: TextTowerInit | None = None,
        logit_scale_init: float = LOGIT_SCALE_MAX,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.num_frames = int(num_frames)
        self.embed_dim = int(embed_dim)
        self.loose = spec.loose
        self.excitation = (
            ExcitationBlock(num_frames, spec.excitation, spec.masked) if spec.excitation is not None else None
        )
        self.aggregation = (
            AggregationBlock(num_frames, spec.aggregation, spec.masked) if spec.aggregation is not None else None
        )
        self.seq: nn.Module | None = None
        self.cross: CrossEncoder | None = None
        if spec.temporal == "seqLSTM":
            self.seq = SeqLSTM(embed_dim)
        elif spec.temporal == "seqTransf":
            self.seq = SeqTransf(embed_dim, text_init)
        elif spec.temporal == "tightTransf":
            self.cross = CrossEncoder(embed_dim, text_init)
        if self.loose:
            self.logit_scale: nn.Parameter | None = nn.Parameter(torch.tensor(float(logit_scale_init)))
        else:
            self.register_parameter("logit_scale", None)
        self._pre = spec.excitation is not None and spec.excitation_pos == "pre" and self.loose

    # ------------------------------------------------------------------ checks
    def _check(self, frames: Tensor, mask: Tensor) -> Tensor:
        if frames.dim() != 3 or frames.size(1) != self.num_frames or frames.size(2) != self.embed_dim:
            raise ValueError(
                f"{self.spec.name}: frames must be [B, {self.num_frames}, {self.embed_dim}], "
                f"got {tuple(frames.shape)}"
            )
        if tuple(mask.shape) != tuple(frames.shape[:2]):
            raise ValueError(f"{self.spec.name}: mask must be {tuple(frames.shape[:2])}, got {tuple(mask.shape)}")
        return mask.to(frames.dtype)

    # ------------------------------------------------------------ loose heads
    def _local(self, frames: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mask = self._check(frames, mask)
        aux: dict[str, Tensor] = {}
        x = frames
        if not self.loose:
            return x, aux
        if self._pre:
            assert self.excitation is not None
            x, aux["gates"] = self.excitation(x, mask)
        if self.seq is not None:
            x = self.seq(x, mask)
        return x, aux

    def video_local(self, frames: Tensor, mask: Tensor) -> Tensor:
        """The part before the all-gather: [E ->] S for sequential rows, identity otherwise."""
        return self._local(frames, mask)[0]

    def video_global(self, frames: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The part after the all-gather -> (v [B, D] L2-normalised, aux).

        aux holds "gates" (post-seq excitation) and/or "weights" (aggregation); the gates of an
        ``excitation_seq*`` row are computed in video_local and reported by encode_video.
        """
        if not self.loose:
            raise NotImplementedError(
                "tightTransf has no text-independent video embedding; use similarity(text, frames, mask)"
            )
        mask = self._check(frames, mask)
        aux: dict[str, Tensor] = {}
        if self._pre and self.aggregation is not None:
            u, aux["weights"] = self.aggregation(frames, mask)  # A on the un-normalised S output
            return l2n(u), aux
        x = l2n(frames)
        if self.excitation is not None and not self._pre:
            x, aux["gates"] = self.excitation(x, mask)
        if self.aggregation is not None:
            u, aux["weights"] = self.aggregation(x, mask)
        else:
            u = masked_mean(x, mask)
        return l2n(u), aux

    def encode_video(self, frames: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x, aux = self._local(frames, mask)
        v, aux_g = self.video_global(x, mask)
        aux.update(aux_g)
        return v, aux

    def loose_logits(self, text: Tensor, video: Tensor) -> Tensor:
        """exp(logit_scale) * N(text) @ video.T (video already L2-normalised)."""
        if self.logit_scale is None:
            raise NotImplementedError("tightTransf has no logit scale; use similarity()")
        return self.logit_scale.exp() * l2n(text) @ video.t()

    # ------------------------------------------------------------------ both
    def similarity(
        self, text: Tensor, frames: Tensor, mask: Tensor, chunk: int = DEFAULT_PAIR_CHUNK
    ) -> Tensor:
        """logits [Bt, Bv] for every text against every video.

        Loose: scaled cosine. Tight: the cross encoder over all Bt*Bv pairs, evaluated in blocks
        of at most ``chunk`` pairs (vectorised inside a block), so evaluation never holds every
        pair's activations at once.
        """
        if self.loose:
            v, _ = self.encode_video(frames, mask)
            return self.loose_logits(text, v)
        assert self.cross is not None
        maskf = self._check(frames, mask)
        x = frames
        if self.excitation is not None:
            # E depends only on the video, so one pass per video equals CLIP4Clip's per-copy pass.
            x, _ = self.excitation(x, maskf)
        bt, bv = text.size(0), x.size(0)
        v_step = max(1, min(bv, chunk))
        t_step = max(1, chunk // v_step)
        rows = []
        for i in range(0, bt, t_step):
            tc = text[i : i + t_step]
            n = tc.size(0)
            cols = []
            for j in range(0, bv, v_step):
                xc, mc = x[j : j + v_step], maskf[j : j + v_step]
                m = xc.size(0)
                logits = self.cross(
                    tc.unsqueeze(1).expand(n, m, -1).reshape(n * m, -1),
                    xc.unsqueeze(0).expand(n, m, -1, -1).reshape(n * m, *xc.shape[1:]),
                    mc.unsqueeze(0).expand(n, m, -1).reshape(n * m, -1),
                )
                cols.append(logits.view(n, m))
            rows.append(torch.cat(cols, dim=1))
        return torch.cat(rows, dim=0)

    def frame_weights(self, frames: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """The gates / weights of encode_video (tight: the excitation "gates" only)."""
        if self.loose:
            return self.encode_video(frames, mask)[1]
        if self.excitation is None:
            return {}
        return {"gates": self.excitation(frames, self._check(frames, mask))[1]}

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Clamp the log logit scale to <= ln(100); call after every optimizer step."""
        if self.logit_scale is not None:
            self.logit_scale.clamp_(max=LOGIT_SCALE_MAX)

    def extra_repr(self) -> str:
        return f"variant={self.spec.name}, T={self.num_frames}, D={self.embed_dim}"


def build_head(
    spec: VariantSpec | str,
    num_frames: int,
    embed_dim: int,
    text_init: TextTowerInit | None = None,
    logit_scale_init: float = LOGIT_SCALE_MAX,
) -> RetrievalHead:
    """Build the head of ``spec`` (a VariantSpec or a variant name).

    New Linear/Embedding layers are drawn from N(0, 0.02) with zero bias; with ``text_init`` the
    seqTransf / cross transformer and position table are then overwritten from CLIP (PAPER §1.5).
    """
    if isinstance(spec, str):
        spec = parse_variant_name(spec)
    return RetrievalHead(spec, num_frames, embed_dim, text_init=text_init, logit_scale_init=logit_scale_init)


def _temporal_params(temporal: str, embed_dim: int) -> int:
    """Closed form of the temporal module's parameter count (tests check it against built modules)."""
    d = embed_dim
    layer = 12 * d * d + 13 * d  # CLIP block: attn 4D^2+4D, MLP 8D^2+5D, two LayerNorms 4D
    if temporal == "meanP":
        return 0
    if temporal == "seqLSTM":
        return 4 * (2 * d * d + 2 * d)  # 4 gates x (W_ih, W_hh, b_ih, b_hh)
    transformer = NUM_LAYERS * layer + CONTEXT_LENGTH * d  # + position table
    if temporal == "seqTransf":
        return transformer
    return transformer + 2 * d + (d * d + d) + (d + 1)  # pooler LayerNorm, dense, similarity_dense


def head_params(spec: VariantSpec | str, num_frames: int = 12, embed_dim: int = 512) -> int:
    """Trainable parameters outside CLIP: temporal module + E/A blocks.

    ``logit_scale`` is excluded: in CLIP4Clip it belongs to CLIP (``clip.logit_scale``), so the
    baselines count 0 (meanP) and the E/A blocks count T*T' + T' + T'*T + T each.
    """
    if isinstance(spec, str):
        spec = parse_variant_name(spec)
    n = _temporal_params(spec.temporal, embed_dim)
    for r in (spec.excitation, spec.aggregation):
        if r is not None:
            n += block_params(num_frames, r)
    return n
