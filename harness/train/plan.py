"""From a ``TrainConfig`` to a ``RunPlan``: the preset resolved and every setting validated.

Nothing here decodes a video, loads CLIP or opens an MLflow run: a bad setting fails in
milliseconds with a message that names the flag and the fix. ``load_resume`` reads back the
saved configuration and training state of a killed run.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.backbone import TINY_CLIP, resolve_model_name
from harness.data.frame_cache import default_cache_root
from harness.errors import CheckpointError, ConfigError, DataError, EABenchError
from harness.presets import DatasetPreset, get_preset, override
from harness.train import checkpoints as ckpt
from harness.train.config import Numerics, Optimizer, Protocol, TrainConfig
from variants import build_head, get_variant, list_variants, parse_variant_name

__all__ = ["CROSS_MAX_POSITIONS", "RunPlan", "load_resume", "resolve_device", "resolve_plan",
           "resolve_variant"]

CROSS_MAX_POSITIONS = 128  # cross-base/cross_config.json (PAPER.md §1.3)
FAST_EVAL_BATCH = 64


@dataclass(frozen=True)
class RunPlan:
    """A TrainConfig with the preset resolved and everything validated (no compute yet)."""

    cfg: TrainConfig
    preset: DatasetPreset
    spec: Any                       # variants.VariantSpec
    rows: tuple[Any, ...]           # the paper rows the variant fills (empty: not a paper row)
    device: torch.device
    protocol: Protocol
    numerics: Numerics
    optimizer: Optimizer
    backbone: str                   # open_clip model name
    weights: Path | None
    cache_root: Path
    eval_batch_size: int

    @property
    def seed(self) -> int:
        return self.preset.seed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu")
    return dev


def resolve_variant(name: str) -> tuple[Any, tuple[Any, ...]]:
    """(spec, paper rows) of a registered name, or of a valid design that is not a paper row."""
    try:
        entry = get_variant(name)
        return entry.spec, tuple(entry.rows)
    except KeyError as exc:
        try:  # a valid spec that is not a paper row (e.g. another ratio) is still trainable
            return parse_variant_name(name), ()
        except (ValueError, KeyError):
            close = difflib.get_close_matches(name, list_variants("*"), n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close and "did you mean" not in str(
                exc) else ""
            raise ConfigError(f"--variant {name!r}: {str(exc).strip(chr(39))}{hint} "
                              "(`eabench variants` lists every name)") from None


def _choice(enum: type, value: str, flag: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: choose one of {', '.join(e.value for e in enum)}") from None


def resolve_numerics(numerics: str, protocol: Protocol) -> Numerics:
    """``auto``: ``reference`` (the authors' fp16 CLIP) in the paper protocol, ``fast`` in the
    frozen one (no CLIP to convert). The choice is recorded with every run."""
    chosen = _choice(Numerics, numerics, "--numerics")
    if chosen is Numerics.AUTO:
        return Numerics.REFERENCE if protocol is Protocol.PAPER else Numerics.FAST
    return chosen


def _positive(value: float, name: str, fix: str, *, zero_ok: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if zero_ok else value > 0)
    if not ok:
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigError(f"{name}={value}: must be a finite number {bound}; {fix}")


def _check_numbers(cfg: TrainConfig, p: DatasetPreset) -> None:
    """Every numeric setting, before any data is read or any MLflow run exists."""
    _positive(p.lr, "lr", "e.g. --set lr=1e-4")
    _positive(p.coef_lr, "coef_lr", "e.g. --set coef_lr=1e-3")
    _positive(p.weight_decay, "weight_decay", "e.g. --set weight_decay=0.2", zero_ok=True)
    # A negative clip norm would flip the gradient and train uphill without a sound.
    _positive(p.max_grad_norm, "max_grad_norm", "e.g. --set max_grad_norm=1.0")
    _positive(p.feature_framerate, "feature_framerate", "frames per second, e.g. --set feature_framerate=1")
    if not 0.0 <= p.warmup_proportion < 1.0:
        raise ConfigError(f"warmup_proportion={p.warmup_proportion}: must be in [0, 1); e.g. 0.1")
    ints = {"max_frames": (p.max_frames, 1), "max_words": (p.max_words, 3),
            "batch_size_val": (p.batch_size_val, 1), "emulate_gpus": (p.emulate_gpus, 1),
            "slice_framepos": (p.slice_framepos, 0)}
    for name, (value, low) in ints.items():
        if value < low:
            why = " (start and end tokens plus one word)" if name == "max_words" else ""
            raise ConfigError(f"{name}={value}: must be >= {low}{why}; set it with --set {name}=N")
    if p.slice_framepos > 2:
        raise ConfigError(f"slice_framepos={p.slice_framepos}: 0 (head), 1 (tail) or 2 (uniform)")
    for flag, value in (("--eval-batch-size", cfg.eval_batch_size), ("--limit-train", cfg.limit_train),
                        ("--limit-test", cfg.limit_test), ("--workers", cfg.workers),
                        ("--max-nonfinite-steps", cfg.max_nonfinite_steps)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    if p.batch_size % p.emulate_gpus:
        raise ConfigError(f"batch size {p.batch_size} is not divisible by emulate_gpus="
                          f"{p.emulate_gpus}: each emulated GPU takes an equal share; change "
                          f"--batch-size or --set emulate_gpus=N (1 = off)")


def _preset(cfg: TrainConfig) -> DatasetPreset:
    preset = override(get_preset(cfg.dataset), dict(cfg.overrides))
    changes: dict[str, Any] = {}
    for key in ("epochs", "batch_size", "seed", "backbone", "weights"):
        value = getattr(cfg, key)
        if value is not None:
            changes[key] = str(value) if key == "weights" else value
    preset = dataclasses.replace(preset, **changes)
    if preset.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {preset.epochs}")
    if preset.batch_size < 2:
        raise ConfigError(f"batch size must be >= 2 (contrastive loss), got {preset.batch_size}")
    _check_numbers(cfg, preset)
    return preset


def _check_head(cfg: TrainConfig, spec: Any, preset: DatasetPreset) -> None:
    try:  # ratios too large for T fail here, before any decoding or CLIP loading
        with torch.device("meta"):
            build_head(spec, num_frames=preset.max_frames, embed_dim=64)
    except ValueError as exc:
        raise ConfigError(f"--variant {cfg.variant} with max_frames={preset.max_frames}: {exc}") from None
    if spec.temporal == "tightTransf" and preset.max_words + preset.max_frames > CROSS_MAX_POSITIONS:
        raise ConfigError(
            f"tightTransf needs max_words + max_frames <= {CROSS_MAX_POSITIONS} (CLIP4Clip's cross "
            f"config assert), got {preset.max_words} + {preset.max_frames}; lower max_words with "
            f"--set max_words=N")


def _weights(cfg: TrainConfig, preset: DatasetPreset, backbone: str) -> Path | None:
    weights = Path(preset.weights).expanduser() if preset.weights else None
    if weights is None and cfg.dataset == "synthetic":
        candidate = Path(cfg.root) / "clip" / f"{backbone}.safetensors"
        weights = candidate if candidate.is_file() else None
    if weights is None and backbone != TINY_CLIP:
        raise CheckpointError(
            f"no CLIP weights for {backbone}: pass --weights PATH to OpenAI's ViT-B-32.pt (the file "
            f"CLIP4Clip downloads to modules/ViT-B-32.pt from openaipublic.azureedge.net); this "
            f"machine has no network, so copy it here first")
    if weights is not None and not weights.is_file():
        raise CheckpointError(f"--weights {weights}: file not found; give the path of the CLIP "
                              f"checkpoint (for ViT-B/32: OpenAI's ViT-B-32.pt)")
    return weights


def resolve_plan(cfg: TrainConfig) -> RunPlan:
    """Validate ``cfg`` before any compute; errors name the flag and the fix."""
    protocol = _choice(Protocol, cfg.protocol, "--protocol")
    preset = _preset(cfg)
    spec, rows = resolve_variant(cfg.variant)
    _check_head(cfg, spec, preset)
    device = resolve_device(cfg.device)
    numerics = resolve_numerics(cfg.numerics, protocol)
    optimizer = _choice(Optimizer, cfg.optimizer, "--optimizer")
    if optimizer is Optimizer.AUTO:
        optimizer = Optimizer.BERTADAM if numerics is Numerics.REFERENCE else Optimizer.ADAMW
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"--root {root}: not a folder; pass the dataset folder holding the "
                        f"annotation files of {cfg.dataset}")
    backbone = resolve_model_name(preset.backbone)
    weights = _weights(cfg, preset, backbone)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root(root)
    # seqLSTM's re-padding makes a few rows depend on the evaluation batch, so reference numerics
    # evaluate in the authors' batch (the preset's batch_size_val); fast numerics in 64s.
    eval_batch = cfg.eval_batch_size or (preset.batch_size_val if numerics is Numerics.REFERENCE
                                         else FAST_EVAL_BATCH)
    return RunPlan(cfg, preset, spec, rows, device, protocol, numerics, optimizer, backbone, weights,
                   cache_root, eval_batch)


def load_resume(cfg: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    """The saved config of run ``cfg.resume`` (device/tracking/progress taken from ``cfg``) and
    its last training state."""
    path = ckpt.checkpoint_dir(cfg.tracking_root, cfg.resume or "") / ckpt.LAST
    if not path.is_file():
        raise EABenchError(
            f"--resume {cfg.resume}: no resumable checkpoint at {path} (a finished run deletes "
            f"it unless trained with keep_last; a run killed before its first epoch ended has "
            f"none; check --tracking-root)")
    state = ckpt.load(path)
    saved = TrainConfig.from_dict(state["config"])
    cfg = dataclasses.replace(saved, resume=cfg.resume, device=cfg.device,
                              tracking_root=cfg.tracking_root,
                              tracking_uri=cfg.tracking_uri or saved.tracking_uri,
                              progress=cfg.progress)
    return cfg, state
