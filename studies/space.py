"""The search space of ``eabench study search``: the default one and a user's YAML/JSON file.

Default space for ``--variants PATTERN`` (every registered variant matching the fnmatch pattern):

- ``design``: the matched variants with their ratios blanked out (``meanP_E*_A*``, ``seqTransf``,
  ``tightTransf_E*`` ...), one categorical choice per distinct design;
- ``excitation_ratio`` / ``aggregation_ratio`` (only for designs with that block): the valid
  fractions, squeeze ``2 3 4 6`` and expansion ``1-2 1-3 1-4 1-6`` (PAPER.md §2.4), minus any
  that do not fit the preset's frame count;
- ``lr`` (the head's learning rate): log-uniform in [1e-5, 1e-2];
- ``weight_decay``: uniform in [0, 0.3];
- ``warmup_proportion``: uniform in [0, 0.3];
- ``batch_size``: categorical {B/4, B/2, B} of the preset's batch B (never above the paper's
  batch, so memory known to suffice for B suffices for every choice).

A space file (``--space FILE``, YAML or JSON) maps names to:

- a list: a categorical choice (``batch_size: [16, 32]``, ``excitation_ratio: ["4", "1-4"]``);
- a mapping with ``low`` and ``high`` (optional ``log: true``, ``step``, ``type: int``): a range;
- a scalar: a fixed value for every trial (``epochs: 3``);
- ``null``: drop that default parameter (the preset's value is used).

Names are ``design`` or ``variant`` (a list of exact variant names; replaces design and ratios),
``excitation_ratio``, ``aggregation_ratio``, and any dataset-preset field (``lr``, ``coef_lr``,
``weight_decay``, ``warmup_proportion``, ``batch_size``, ``epochs``, ``max_frames`` ...); keys
of the file replace the defaults of the same name. Example::

    variant: [meanP_A4, meanP_A1-4, seqTransf_A1-4]
    lr: {low: 1.0e-5, high: 1.0e-3, log: true}
    batch_size: [32, 64]
    epochs: 3
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import optuna
import torch

from harness.errors import ConfigError
from harness.presets import DatasetPreset
from variants import VariantSpec, build_head, format_ratio, list_variants, parse_ratio, parse_variant_name

__all__ = ["BLANK", "RATIO_CHOICES", "SearchSpace", "blanks", "default_space", "design_of", "fill_design",
           "load_space_file"]

# The paper's reduction ratios (PAPER.md §2.4): squeeze r > 1 and expansion r < 1.
RATIO_CHOICES = tuple(format_ratio(r) for r in (*map(Fraction, (2, 3, 4, 6)),
                                                *(Fraction(1, n) for n in (2, 3, 4, 6))))
BLANK = "*"
# A design is a variant name with a blank for each searched ratio. The variants package owns the
# naming rule, so a blank travels through it as this stand-in ratio (written "1-997", a ratio no
# design uses) and becomes BLANK in the name only at the end.
_SLOT = Fraction(1, 997)
_SPECIAL = ("design", "variant", "excitation_ratio", "aggregation_ratio")


def design_of(name: str) -> str:
    """``meanP_E4_A1-4`` -> ``meanP_E*_A*``; names without blocks are their own design."""
    spec = parse_variant_name(name)
    slotted = replace(spec, excitation=_SLOT if spec.excitation is not None else None,
                      aggregation=_SLOT if spec.aggregation is not None else None)
    return slotted.name.replace(format_ratio(_SLOT), BLANK)


@lru_cache(maxsize=256)
def _design_spec(design: str) -> VariantSpec:
    """The spec of a design, its blanks held by the stand-in ratio (ValueError if not a design)."""
    return parse_variant_name(design.replace(BLANK, format_ratio(_SLOT)))


def blanks(design: str) -> tuple[bool, bool]:
    """Whether the design leaves its excitation ratio and its aggregation ratio to the search."""
    spec = _design_spec(design)
    return spec.excitation == _SLOT, spec.aggregation == _SLOT


def fill_spec(design: str, e_ratio: str | None, a_ratio: str | None) -> VariantSpec:
    """The spec of a design with its blanks filled (validated by the spec: ValueError if invalid)."""
    spec = _design_spec(design)
    e_blank, a_blank = blanks(design)
    missing = [block for block, blank, ratio in (("excitation", e_blank, e_ratio), ("aggregation", a_blank, a_ratio))
               if blank and ratio is None]
    if missing:
        raise ValueError(f"design {design!r} needs a ratio for its {' and '.join(missing)} block")
    return replace(spec, excitation=parse_ratio(e_ratio) if e_blank else spec.excitation,
                   aggregation=parse_ratio(a_ratio) if a_blank else spec.aggregation)


def fill_design(design: str, e_ratio: str | None, a_ratio: str | None) -> str:
    """Fill a design's blanks with ratios: ``fill_design("meanP_E*_A*", "1-3", "6") == "meanP_E1-3_A6"``."""
    return fill_spec(design, e_ratio, a_ratio).name


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: categorical ``choices`` or a ``low``..``high`` range."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(map(str, self.choices)) + "}"
        kind = "int" if self.integer else "float"
        return f"{kind} [{self.low:g}, {self.high:g}]" + (" log" if self.log else "") + \
            (f" step {self.step:g}" if self.step else "")


@dataclass(frozen=True)
class SearchSpace:
    """Variant choice (designs + ratios, or exact names) plus preset hyperparameters."""

    designs: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()               # exact names (replaces designs when non-empty)
    excitation_ratio: tuple[str, ...] = RATIO_CHOICES
    aggregation_ratio: tuple[str, ...] = RATIO_CHOICES
    params: tuple[Param, ...] = ()
    fixed: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @property
    def conditional(self) -> bool:
        """True when some parameters exist only for some designs (TPE then groups them)."""
        if self.variants:
            return False
        return len({blanks(d) for d in self.designs}) > 1

    def suggest(self, trial: optuna.Trial) -> tuple[str, dict[str, Any]]:
        """Draw a variant name and preset overrides (values keep their Python types)."""
        if self.variants:
            variant = str(trial.suggest_categorical("variant", list(self.variants)))
        else:
            design = str(trial.suggest_categorical("design", list(self.designs)))
            e_blank, a_blank = blanks(design)
            e = str(trial.suggest_categorical("excitation_ratio", list(self.excitation_ratio))) if e_blank else None
            a = str(trial.suggest_categorical("aggregation_ratio", list(self.aggregation_ratio))) if a_blank else None
            variant = fill_design(design, e, a)
        overrides: dict[str, Any] = dict(self.fixed)
        for p in self.params:
            overrides[p.name] = p.suggest(trial)
        return variant, overrides

    def example_variant(self) -> str:
        """One variant the space can produce (validated before a study starts)."""
        if self.variants:
            return self.variants[0]
        return fill_design(self.designs[0], self.excitation_ratio[0], self.aggregation_ratio[0])

    def describe(self) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        if self.variants:
            rows.append(("variant", "{" + ", ".join(self.variants) + "}"))
        else:
            rows.append(("design", "{" + ", ".join(self.designs) + "}"))
            if any(blanks(d)[0] for d in self.designs):
                rows.append(("excitation_ratio", "{" + ", ".join(self.excitation_ratio) + "}"))
            if any(blanks(d)[1] for d in self.designs):
                rows.append(("aggregation_ratio", "{" + ", ".join(self.aggregation_ratio) + "}"))
        rows += [(p.name, p.describe()) for p in self.params]
        rows += [(k, f"fixed {v}") for k, v in self.fixed]
        return rows

    def to_json(self) -> str:
        return json.dumps(self.describe())


def _preset_fields() -> set[str]:
    return {f.name for f in fields(DatasetPreset)} - {"name", "reader", "train_split", "test_split"}


def _ratio_fits(design: str, ratio: str, max_frames: int) -> bool:
    """Whether a design with this ratio (in each of its blanks) builds a head for ``max_frames`` frames."""
    try:
        spec = fill_spec(design, ratio, ratio)
        with torch.device("meta"):
            build_head(spec, num_frames=max_frames, embed_dim=64)
    except ValueError:
        return False
    return True


def default_space(pattern: str, *, batch_size: int, max_frames: int) -> SearchSpace:
    """The documented default space (module docstring) for variants matching ``pattern``."""
    patterns = [p.strip() for p in pattern.split(",") if p.strip()]
    names = list_variants(patterns)
    if not names:
        raise ConfigError(f"--variants {pattern!r} matches no registered variant; `eabench variants` lists them")
    designs = tuple(dict.fromkeys(design_of(n) for n in names))
    e_ok = tuple(r for r in RATIO_CHOICES
                 if all(_ratio_fits(d, r, max_frames) for d in designs if blanks(d)[0]))
    a_ok = tuple(r for r in RATIO_CHOICES
                 if all(_ratio_fits(d, r, max_frames) for d in designs if blanks(d)[1]))
    batches = tuple(sorted({b for b in (batch_size // 4, batch_size // 2, batch_size) if b >= 2}))
    params = (
        Param("lr", low=1e-5, high=1e-2, log=True),
        Param("weight_decay", low=0.0, high=0.3),
        Param("warmup_proportion", low=0.0, high=0.3),
        Param("batch_size", choices=batches),
    )
    return SearchSpace(designs=designs, excitation_ratio=e_ok or RATIO_CHOICES,
                       aggregation_ratio=a_ok or RATIO_CHOICES, params=params)


def _param_from(path: Path, name: str, value: Any) -> Param:
    where = f"{path}: {name}"
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: an empty list; give at least one choice")
        return Param(name, choices=tuple(value))
    if isinstance(value, dict):
        unknown = set(value) - {"low", "high", "log", "step", "type"}
        if unknown or "low" not in value or "high" not in value:
            raise ConfigError(f"{where}: a range needs 'low' and 'high' (optional log, step, type: int); "
                              f"got keys {sorted(value)}")
        try:
            low, high = float(value["low"]), float(value["high"])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: low/high must be numbers, got {value['low']!r}, {value['high']!r}") from None
        if not low < high:
            raise ConfigError(f"{where}: low ({low:g}) must be below high ({high:g})")
        log = bool(value.get("log", False))
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0")
        integer = value.get("type") == "int"
        if value.get("type") not in (None, "int", "float"):
            raise ConfigError(f"{where}: type must be int or float, got {value['type']!r}")
        step = float(value["step"]) if value.get("step") is not None else None
        return Param(name, low=low, high=high, log=log, step=step, integer=integer)
    raise ConfigError(f"{where}: expected a list (choices), a {{low, high}} range, a scalar or null")


def load_space_file(path: Path, base: SearchSpace) -> SearchSpace:
    """Apply a YAML/JSON space file over ``base`` (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--space {path}: file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"--space {path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--space {path}: the top level must be a mapping of parameter names")
    allowed = _preset_fields()
    params = {p.name: p for p in base.params}
    fixed = dict(base.fixed)
    designs, variants = base.designs, base.variants
    e_ratio, a_ratio = base.excitation_ratio, base.aggregation_ratio
    for name, value in data.items():
        if name == "variant":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{path}: variant must be a non-empty list of variant names")
            for v in value:
                try:
                    parse_variant_name(str(v))
                except (ValueError, KeyError) as exc:
                    raise ConfigError(f"{path}: variant {v!r} is not a valid name ({exc})") from None
            variants = tuple(str(v) for v in value)
        elif name == "design":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{path}: design must be a non-empty list like ['meanP_E*_A*', 'seqTransf']")
            for d in value:
                try:
                    _design_spec(str(d))
                except ValueError as exc:
                    raise ConfigError(f"{path}: design {d!r} is not a variant name with {BLANK} for its ratios "
                                      f"({exc})") from None
            designs, variants = tuple(str(v) for v in value), ()
        elif name in ("excitation_ratio", "aggregation_ratio"):
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{path}: {name} must be a non-empty list of ratios like ['4', '1-4']")
            clean = []
            for r in value:
                try:
                    fr = parse_ratio(str(r))
                except ValueError:
                    raise ConfigError(f"{path}: {name} value {r!r} is not a ratio; write 4 or '1-4'") from None
                if fr <= 0 or fr == 1:
                    raise ConfigError(f"{path}: {name} value {r!r} must be positive and not 1")
                clean.append(format_ratio(fr))
            if name == "excitation_ratio":
                e_ratio = tuple(clean)
            else:
                a_ratio = tuple(clean)
        elif name not in allowed:
            raise ConfigError(f"{path}: unknown parameter {name!r}; use design, variant, excitation_ratio, "
                              f"aggregation_ratio or a preset field ({', '.join(sorted(allowed))})")
        elif value is None:
            params.pop(name, None)
            fixed.pop(name, None)
        elif isinstance(value, (list, dict)):
            params[name] = _param_from(path, name, value)
            fixed.pop(name, None)
        else:
            fixed[name] = value
            params.pop(name, None)
    return SearchSpace(designs=designs, variants=variants, excitation_ratio=e_ratio, aggregation_ratio=a_ratio,
                       params=tuple(params.values()), fixed=tuple(fixed.items()))
