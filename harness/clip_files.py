"""CLIP checkpoint files: format detection, reading, writing, and a cached SHA-256.

Every format a CLIP4Clip user has on disk is read without network:

- the OpenAI TorchScript archive ``ViT-B-32.pt`` (a zip holding ``code/`` and ``constants.pkl``),
- a plain state dict saved with ``torch.save`` (OpenAI/open_clip key layout, optionally wrapped in
  ``{"state_dict": ...}`` and/or prefixed by ``module.``),
- a safetensors file.

The format is detected from the file's bytes, not its extension. A file that cannot be read, or
whose tensors do not fit the named architecture, raises :class:`harness.errors.CheckpointError`
naming the file, what was expected and how to fix it.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from harness.clip_models import expected_checkpoint
from harness.errors import CheckpointError

__all__ = [
    "JIT_EXTRAS",
    "SAVE_FORMATS",
    "check_fits",
    "detect_format",
    "file_sha256",
    "read_state_dict",
    "write_state_dict",
]

SAVE_FORMATS = ("openai-jit", "state-dict", "safetensors")

# Tensors the OpenAI JIT archive carries that are not model parameters.
JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


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


def read_state_dict(path: Path, model_name: str) -> tuple[dict[str, Tensor], str]:
    """(state dict with OpenAI keys, detected format) of a checkpoint meant for ``model_name``."""
    fmt = detect_format(path)
    expected = expected_checkpoint(model_name)
    fix = f"pass {expected}"
    try:
        if fmt == "openai-jit":
            with warnings.catch_warnings():
                # torch.jit.load is deprecated in favour of torch.export, but it is the only
                # reader of the archive OpenAI published.
                warnings.simplefilter("ignore")
                module = torch.jit.load(str(path), map_location="cpu")
            sd = dict(module.state_dict())
            for key in JIT_EXTRAS:
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
                    f"expected {expected}; {fix}")
            sd = dict(obj)
        else:
            raise CheckpointError(
                f"{path}: unknown checkpoint format (not a TorchScript archive, torch.save file or "
                f"safetensors file); expected {expected}; {fix}")
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt zip/pickle/safetensors: report which file and what was wanted
        raise CheckpointError(
            f"{path}: could not read the {fmt} checkpoint ({type(exc).__name__}: {exc}); "
            f"expected {expected}; {fix}") from exc
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, fmt


def check_fits(sd: dict[str, Tensor], model: nn.Module, path: Path, model_name: str) -> None:
    """Raise CheckpointError listing shape mismatches, missing and unexpected keys, if any."""
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
        f"{expected_checkpoint(model_name)}. Fix: pass the checkpoint that matches the model, or "
        f"choose the model name that matches this file (--backbone).")


# ----------------------------------------------------------------------------------------------
# writing (used by tests and by the synthetic benchmark's pre-training)


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
        if value.is_floating_point() and key not in JIT_EXTRAS:
            node.register_parameter(leaf, nn.Parameter(value.detach().clone(), requires_grad=False))
        else:
            node.register_buffer(leaf, value.detach().clone())
    return root


def write_state_dict(sd: dict[str, Tensor], path: Path, fmt: str, *, model_name: str,
                     jit_extras: dict[str, Tensor] | None = None) -> Path:
    """Write CPU tensors ``sd`` as ``safetensors`` (``model_name`` in its metadata), ``state-dict``
    (torch.save) or ``openai-jit`` (a TorchScript archive of ``sd`` plus ``jit_extras``)."""
    if fmt not in SAVE_FORMATS:
        raise ValueError(f"fmt must be one of {SAVE_FORMATS}, got {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path), metadata={"model_name": model_name})
    elif fmt == "state-dict":
        torch.save(sd, str(path))
    else:
        holder = _holder_from_state_dict({**sd, **(jit_extras or {})})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated; the archive is the point
            torch.jit.save(torch.jit.script(holder), str(path))
    return path


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
