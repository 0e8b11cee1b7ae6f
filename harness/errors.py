"""Error types shared by the harness: each carries a message that names the file, field and fix."""
from __future__ import annotations


class EABenchError(Exception):
    """Base class of every error the harness raises on purpose."""


class DataError(EABenchError):
    """Malformed or missing dataset files (names the file, the record and the field)."""


class CheckpointError(EABenchError):
    """A CLIP checkpoint that is missing, of an unknown format, or of the wrong architecture."""


class ConfigError(EABenchError):
    """An invalid configuration value (names the key and the allowed values)."""
