"""The CLIP backbone: open_clip models loaded offline from local checkpoint files.

CLIP4Clip fine-tunes OpenAI's CLIP ViT-B/32 (PAPER.md §1.2). We build the network with
``open_clip`` (whose ``CLIP`` class keeps OpenAI's parameter names, DATASETS.md §5.1) and load
the weights ourselves, so that every format a CLIP4Clip user has on disk works without network:

- the OpenAI TorchScript archive ``ViT-B-32.pt`` (a zip holding ``code/`` and ``constants.pkl``),
- a plain state dict saved with ``torch.save`` (OpenAI/open_clip key layout, optionally wrapped in
  ``{"state_dict": ...}`` and/or prefixed by ``module.``),
- a safetensors file.

The format is detected from the file's bytes, not its extension. A file whose tensors do not fit
the named architecture raises :class:`harness.errors.CheckpointError` naming the file, what was
expected and how to fix it.

``eabench-tiny`` is a tiny CLIP (width 64, 32 px images) for tests and the synthetic benchmark; it
is registered with open_clip when first loaded, never at import.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from harness.errors import CheckpointError

if TYPE_CHECKING:  # variants/ is pure model code; imported lazily at call time
    from variants import TextTowerInit

__all__ = [
    "MODEL_ALIASES",
    "SAVE_FORMATS",
    "TINY_CLIP",
    "TINY_CLIP_CONFIG",
    "ClipBackbone",
    "detect_format",
    "file_sha256",
    "load_clip",
    "register_tiny_clip",
    "resolve_model_name",
    "save_clip",
]

TINY_CLIP = "eabench-tiny"

# Text width == embed_dim so seqTransf/tightTransf can initialise from the text blocks (as with
# ViT-B/32: 512 == 512); 4 text layers because those heads copy text blocks 0..3.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 4},
}

# OpenAI's names (as in CLIP4Clip's ``--pretrained_clip_name``) → open_clip configs with QuickGELU,
# the activation OpenAI's weights were trained with.
MODEL_ALIASES: dict[str, str] = {
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}

SAVE_FORMATS = ("openai-jit", "state-dict", "safetensors")

# Tensors the OpenAI JIT archive carries that are not model parameters.
_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def register_tiny_clip() -> None:
    """Make ``eabench-tiny`` known to open_clip (idempotent)."""
    import open_clip
    from open_clip import factory

    if TINY_CLIP in open_clip.list_models():
        return
    # open_clip keeps its architecture registry in this dict (add_model_config only adds JSON
    # files to it); inserting the config directly avoids writing files at run time.
    factory._MODEL_CONFIGS[TINY_CLIP] = json.loads(json.dumps(TINY_CLIP_CONFIG))


def resolve_model_name(model_name: str) -> str:
    name = MODEL_ALIASES.get(model_name, model_name)
    if name == TINY_CLIP:
        register_tiny_clip()
    return name


def _expected(model_name: str) -> str:
    if model_name == TINY_CLIP:
        return (f"an {TINY_CLIP} checkpoint (safetensors or state dict) such as "
                f"<data root>/clip/{TINY_CLIP}.safetensors written by `eabench data synthetic`")
    if model_name.startswith("ViT-B-32"):
        return ("an OpenAI CLIP ViT-B/32 checkpoint such as ViT-B-32.pt (TorchScript) or an "
                f"open_clip state dict for {model_name}")
    return f"an OpenAI/open_clip checkpoint for {model_name}"


# ----------------------------------------------------------------------------------------------
# format detection and reading


def detect_format(path: Path) -> str:
    """'openai-jit' | 'torch-zip' | 'torch-legacy' | 'safetensors' from the file's bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        # torch.jit.save writes <archive>/code/... and constants.pkl; torch.save writes data.pkl only.
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "openai-jit"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-zip"
        return "unknown"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        size = path.stat().st_size
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle protocol marker of the legacy torch.save format
        return "torch-legacy"
    return "unknown"


def _read_state_dict(path: Path, model_name: str) -> tuple[dict[str, Tensor], str]:
    fmt = detect_format(path)
    fix = f"pass {_expected(model_name)}"
    try:
        if fmt == "openai-jit":
            with warnings.catch_warnings():
                # torch.jit.load is deprecated in favour of torch.export, but it is the only
                # reader of the archive OpenAI published.
                warnings.simplefilter("ignore")
                module = torch.jit.load(str(path), map_location="cpu")
            sd = dict(module.state_dict())
            for key in _JIT_EXTRAS:
                sd.pop(key, None)
        elif fmt == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        elif fmt in ("torch-zip", "torch-legacy"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
                obj = obj["state_dict"]
            elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
                obj = obj["model"]
            if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
                raise CheckpointError(
                    f"{path}: torch.load gave a {type(obj).__name__}, not a state dict of tensors; "
                    f"expected {_expected(model_name)}; {fix}")
            sd = dict(obj)
        else:
            raise CheckpointError(
                f"{path}: unknown checkpoint format (not a TorchScript archive, torch.save file or "
                f"safetensors file); expected {_expected(model_name)}; {fix}")
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt zip/pickle/safetensors: report which file and what was wanted
        raise CheckpointError(
            f"{path}: could not read the {fmt} checkpoint ({type(exc).__name__}: {exc}); "
            f"expected {_expected(model_name)}; {fix}") from exc
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, fmt


def _check_fits(sd: dict[str, Tensor], model: nn.Module, path: Path, model_name: str) -> None:
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    shape = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(want[k].shape)}"
             for k in want if k in sd and sd[k].shape != want[k].shape]
    if not (missing or unexpected or shape):
        return
    parts = []
    if shape:
        parts.append(f"{len(shape)} shape mismatches (e.g. {'; '.join(shape[:3])})")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    raise CheckpointError(
        f"{path}: does not fit the architecture {model_name}: {'; '.join(parts)}. Expected "
        f"{_expected(model_name)}. Fix: pass the checkpoint that matches the model, or choose the "
        f"model name that matches this file (--backbone).")


# ----------------------------------------------------------------------------------------------
# sha256 with a small cache keyed by (path, size, mtime)


def _cache_file() -> Path:
    root = os.environ.get("EABENCH_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "eabench"
    return base / "sha256.json"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks; cached so the 338 MB ViT-B/32 is hashed once."""
    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    stamp = [st.st_size, st.st_mtime_ns]
    cache_path = _cache_file()
    cache: dict[str, Any] = {}
    try:
        cache = json.loads(cache_path.read_text())
        hit = cache.get(key)
        if isinstance(hit, dict) and hit.get("stamp") == stamp:
            return str(hit["sha256"])
    except (OSError, ValueError):
        cache = {}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    cache[key] = {"stamp": stamp, "sha256": value}
    try:  # the cache is an optimisation: an unwritable home must not stop a run
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_path)
    except OSError:
        pass
    return value


# ----------------------------------------------------------------------------------------------
# the backbone


class ClipBackbone(nn.Module):
    """An open_clip ``CLIP`` with CLIP4Clip's frame and text encoders on top."""

    def __init__(self, model: nn.Module, model_name: str, weights_sha256: str | None,
                 logit_scale_init: float) -> None:
        super().__init__()
        self.model = model
        self.model_name = model_name
        self.weights_sha256 = weights_sha256
        self.logit_scale_init = float(logit_scale_init)
        size = model.visual.image_size
        self.image_size: int = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.embed_dim: int = int(model.text_projection.shape[1])
        self.context_length: int = int(model.context_length)
        self.text_heads: int = int(model.transformer.resblocks[0].attn.num_heads)

    def encode_frames(self, pixels: Tensor) -> Tensor:
        """[B, T, 3, H, W] normalised pixels → [B, T, D] fp32 frame features (CLS → ln_post → proj)."""
        if pixels.dim() != 5:
            raise ValueError(f"encode_frames expects [B, T, 3, H, W], got {tuple(pixels.shape)}")
        b, t = pixels.shape[:2]
        feats = self.model.encode_image(pixels.reshape(b * t, *pixels.shape[2:]))
        return feats.float().reshape(b, t, -1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """[B, L] token ids (L ≤ 77, zero padded) → [B, D] fp32 features at the EOT position.

        Like CLIP4Clip the positional table and causal mask are sliced to L (open_clip's own
        encode_text only accepts L == 77). The mask is causal, so the EOT output does not depend
        on what follows it: any zero padding length gives the same feature.
        """
        m = self.model
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"text of {length} tokens exceeds the context length {self.context_length}")
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        mask = m.attn_mask[:length, :length] if m.attn_mask is not None else None
        x = m.transformer(x, attn_mask=mask)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # EOT = largest id
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else x @ m.text_projection
        return x.float()

    def text_init(self, layers: int = 4) -> TextTowerInit:
        """Positional table and text blocks 0..layers-1 (OpenAI keys) for seqTransf/tightTransf."""
        try:  # lazily: variants/ must not be needed to load CLIP
            from variants import TextTowerInit
        except ImportError:  # the package root may not re-export it yet
            from variants.temporal import TextTowerInit

        blocks = self.model.transformer.resblocks
        if layers > len(blocks):
            raise ValueError(f"{self.model_name} has {len(blocks)} text layers, {layers} requested")
        resblocks = [{k: v.detach().clone() for k, v in blocks[i].state_dict().items()}
                     for i in range(layers)]
        return TextTowerInit(
            positional_embedding=self.model.positional_embedding.detach().clone(),
            resblocks=resblocks, heads=self.text_heads)

    def clip_parameters(self) -> Iterator[nn.Parameter]:
        """CLIP's own parameters (they train at lr × coef_lr)."""
        return self.model.parameters()

    def forward(self, pixels: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_frames(pixels), self.encode_text(tokens)


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("No pretrained weights loaded"):
            return False
        # open_clip narrates every model build at INFO on the root logger; that is noise in a
        # study that builds the model once per trial.
        return not (record.levelno <= logging.INFO and "open_clip" in record.pathname)


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip warns "No pretrained weights loaded" on the root logger whenever pretrained=None;
    we load the weights ourselves right after, so the notice is misleading. Its INFO narration of
    the build is dropped too."""
    flt = _DropRandomInitNotice()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def load_clip(model_name: str, weights: Path | str | None = None, *, device: str | torch.device = "cpu",
              allow_random: bool = False) -> ClipBackbone:
    """Build ``model_name`` with open_clip and load ``weights`` (any supported format), offline.

    ``weights=None`` gives a random initialisation: allowed for the tiny model, otherwise only with
    ``allow_random=True`` (a random ViT-B/32 is never what a user wants by accident).
    """
    import open_clip

    name = resolve_model_name(model_name)
    if name not in open_clip.list_models():
        raise CheckpointError(
            f"unknown CLIP architecture {model_name!r}; use {TINY_CLIP!r}, 'ViT-B/32' "
            f"(= ViT-B-32-quickgelu) or another open_clip model name")
    if weights is None and not (name == TINY_CLIP or allow_random):
        raise CheckpointError(
            f"no CLIP weights given for {name}; expected {_expected(name)}. Fix: pass the file "
            f"(e.g. --weights /path/ViT-B-32.pt); random initialisation needs allow_random=True")
    sd: dict[str, Tensor] | None = None
    sha = None
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise CheckpointError(
                f"{path}: CLIP checkpoint not found; expected {_expected(name)}. Fix: give the path "
                f"of the file (CLIP4Clip users have it at modules/ViT-B-32.pt)")
        sd, _fmt = _read_state_dict(path, name)  # read first: a bad file fails before a big build
    with _quiet_open_clip():
        model = open_clip.create_model(name, pretrained=None, device="cpu")
    if sd is not None:
        if "logit_scale" in sd and sd["logit_scale"].shape != model.logit_scale.shape:
            sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
        _check_fits(sd, model, path, name)
        # OpenAI stores fp16; we hold fp32 master weights (mixed precision is the engine's job).
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
        sha = file_sha256(path)
    model = model.float().eval()
    logit_scale = float(model.logit_scale.detach().reshape(-1)[0])
    return ClipBackbone(model, name, sha, logit_scale).to(device)


# ----------------------------------------------------------------------------------------------
# saving (used by tests and by the synthetic benchmark's pre-training)


class _Holder(nn.Module):
    """A module tree that holds tensors under given dotted names, so a TorchScript archive of it
    has exactly OpenAI's state-dict keys."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def _holder_from_state_dict(sd: dict[str, Tensor]) -> nn.Module:
    root = _Holder()
    for key, value in sd.items():
        *path, leaf = key.split(".")
        node: nn.Module = root
        for part in path:
            child = getattr(node, part, None) if part in node._modules else None
            if child is None:
                child = _Holder()
                node.add_module(part, child)
            node = child
        if value.is_floating_point() and key not in _JIT_EXTRAS:
            node.register_parameter(leaf, nn.Parameter(value.detach().clone(), requires_grad=False))
        else:
            node.register_buffer(leaf, value.detach().clone())
    return root


def save_clip(backbone: ClipBackbone, path: Path | str, fmt: str = "safetensors") -> Path:
    """Write the CLIP weights as ``openai-jit`` (TorchScript archive with OpenAI keys and the
    ``input_resolution``/``context_length``/``vocab_size`` extras, like ``ViT-B-32.pt``),
    ``state-dict`` (torch.save) or ``safetensors``."""
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"fmt must be one of {SAVE_FORMATS}, got {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path), metadata={"model_name": backbone.model_name})
    elif fmt == "state-dict":
        torch.save(sd, str(path))
    else:
        extras = {
            "input_resolution": torch.tensor(backbone.image_size),
            "context_length": torch.tensor(backbone.context_length),
            "vocab_size": torch.tensor(int(backbone.model.vocab_size)),
        }
        holder = _holder_from_state_dict({**sd, **extras})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated; the archive is the point
            torch.jit.save(torch.jit.script(holder), str(path))
    return path
