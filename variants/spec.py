"""The frozen description of one model variant and its canonical name.

A name is ``<temporal>[_[pre]E<r>][_A<r>][-masked]``: ``meanP``, ``meanP_E4``, ``meanP_E1-4``,
``seqTransf_preE4_A1-4``, ``tightTransf_E4``, ``meanP_A4-masked``. Ratios are exact
``Fraction``s written ``4`` or ``1-4`` (1/3 and 1/6 are not floats); ``parse`` also accepts
``1/4`` and exact decimals such as ``0.25`` but names are always emitted in the ``1-4`` form.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal

Temporal = Literal["meanP", "seqLSTM", "seqTransf", "tightTransf"]
ExcitationPos = Literal["post", "pre"]

TEMPORALS: tuple[str, ...] = ("meanP", "seqLSTM", "seqTransf", "tightTransf")
SEQUENTIAL: tuple[str, ...] = ("seqLSTM", "seqTransf")


def to_ratio(value: Fraction | float | str) -> Fraction:
    """Coerce a ratio to an exact Fraction; rejects floats that are not short exact decimals.

    ``1/3`` as a float is 0.333...; silently turning it into 6004799503160661/18014398509481984
    would give a ratio nobody meant, so such floats are refused with the fix in the message.
    """
    if isinstance(value, bool):
        raise ValueError(f"ratio must be a number, got {value!r}")  # noqa: TRY004
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text or len(text.split(".")[-1]) > 6:
            raise ValueError(
                f"ratio {value!r} is not an exact short decimal; pass Fraction(1, 3) or the string '1-3'"
            )
        return Fraction(text)
    if isinstance(value, str):
        return parse_ratio(value)
    raise ValueError(f"ratio must be a Fraction, int, float or str, got {type(value).__name__}")


_RATIO_RE = re.compile(r"^(\d+)(?:[-/](\d+))?$|^(\d*\.\d+)$")


def parse_ratio(text: str) -> Fraction:
    """Parse ``4``, ``1-4``, ``1/4`` or ``0.25`` into a Fraction."""
    m = _RATIO_RE.match(text.strip())
    if not m:
        raise ValueError(f"cannot parse ratio {text!r}; write it as '4', '1-4' or '1/4'")
    if m.group(3) is not None:
        return Fraction(m.group(3))
    den = int(m.group(2)) if m.group(2) is not None else 1
    if den == 0:
        raise ValueError(f"ratio {text!r} has a zero denominator")
    return Fraction(int(m.group(1)), den)


def format_ratio(r: Fraction, sep: str = "-") -> str:
    """``4`` for integers, ``1-4`` (or ``1/4`` with sep="/") otherwise."""
    return str(r.numerator) if r.denominator == 1 else f"{r.numerator}{sep}{r.denominator}"


def block_kind(r: Fraction | None) -> str | None:
    """``"squeeze"`` for r > 1 (bottleneck, ReLU), ``"expansion"`` for r < 1 (ReLU6)."""
    if r is None:
        return None
    return "squeeze" if r > 1 else "expansion"


@dataclass(frozen=True)
class VariantSpec:
    """One point of the design space (PAPER.md §2-§3).

    temporal: the similarity calculator. excitation / aggregation: reduction ratios of the E and
    A blocks (None = absent; no aggregation means masked mean pooling). excitation_pos: "post"
    (E after the temporal module, on L2-normalised frames) or "pre" (E on raw features before
    the sequential module, the authors' ``excitation_seq*``). For tightTransf excitation always
    acts on raw features before the cross encoder, so its excitation_pos is normalised to "pre".
    masked: our option (not the authors'): padded frames get gate 0 / aggregation weight 0.
    """

    temporal: str
    excitation: Fraction | None = None
    excitation_pos: str = "post"
    aggregation: Fraction | None = None
    masked: bool = False

    def __post_init__(self) -> None:
        if self.temporal not in TEMPORALS:
            raise ValueError(f"temporal must be one of {', '.join(TEMPORALS)}; got {self.temporal!r}")
        for field in ("excitation", "aggregation"):
            value = getattr(self, field)
            if value is None:
                continue
            r = to_ratio(value)
            if r <= 0:
                raise ValueError(f"{field} ratio must be positive (got {r})")
            if r == 1:
                raise ValueError(
                    f"{field} ratio must not be 1: r > 1 is a squeeze and r < 1 an expansion (PAPER §2.4)"
                )
            object.__setattr__(self, field, r)
        if self.excitation_pos not in ("post", "pre"):
            raise ValueError(f"excitation_pos must be 'post' or 'pre'; got {self.excitation_pos!r}")
        if not isinstance(self.masked, bool):
            raise ValueError(f"masked must be a bool; got {self.masked!r}")  # noqa: TRY004
        if self.temporal == "tightTransf":
            if self.aggregation is not None:
                raise ValueError(
                    "tightTransf supports only excitation: the authors apply no aggregation in the "
                    "cross encoder (PAPER §3.3)"
                )
            if self.excitation is not None:
                # Tight excitation always acts on raw frames before concatenation (PAPER §3.3).
                object.__setattr__(self, "excitation_pos", "pre")
            elif self.excitation_pos == "pre":
                raise ValueError("excitation_pos='pre' requires an excitation ratio")
        else:
            if self.excitation_pos == "pre" and self.excitation is None:
                raise ValueError("excitation_pos='pre' requires an excitation ratio")
            if self.excitation_pos == "pre" and self.temporal == "meanP":
                raise ValueError(
                    "meanP cannot have excitation_pos='pre': excitation_seq* needs a sequential module "
                    "(PAPER §3.4: it does nothing or crashes with meanP)"
                )
        if self.masked and self.excitation is None and self.aggregation is None:
            raise ValueError("masked requires at least one excitation or aggregation block")

    # ----------------------------------------------------------------- naming
    @property
    def name(self) -> str:
        parts = [self.temporal]
        if self.excitation is not None:
            pre = "pre" if self.excitation_pos == "pre" and self.temporal != "tightTransf" else ""
            parts.append(f"{pre}E{format_ratio(self.excitation)}")
        if self.aggregation is not None:
            parts.append(f"A{format_ratio(self.aggregation)}")
        return "_".join(parts) + ("-masked" if self.masked else "")

    @classmethod
    def parse(cls, name: str) -> VariantSpec:
        return parse_variant_name(name)

    @property
    def is_baseline(self) -> bool:
        return self.excitation is None and self.aggregation is None

    @property
    def loose(self) -> bool:
        return self.temporal != "tightTransf"

    @property
    def se_type(self) -> str:
        """The authors' ``--se_type`` for this spec ("none" for baselines)."""
        e, a = self.excitation is not None, self.aggregation is not None
        if not e and not a:
            return "none"
        if self.excitation_pos == "pre" and self.temporal != "tightTransf":
            return "excitation_seq_aggregation" if a else "excitation_seq"
        if e and a:
            return "excitation_aggregation"
        return "excitation" if e else "aggregation"

    def as_params(self) -> dict[str, str]:
        """Flat string params for MLflow/Optuna."""
        return {
            "variant": self.name,
            "temporal": self.temporal,
            "se_type": self.se_type,
            "excitation": format_ratio(self.excitation, "/") if self.excitation is not None else "none",
            "excitation_pos": self.excitation_pos if self.excitation is not None else "none",
            "aggregation": format_ratio(self.aggregation, "/") if self.aggregation is not None else "none",
            "masked": str(self.masked).lower(),
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("excitation", "aggregation"):
            d[k] = format_ratio(d[k], "/") if d[k] is not None else None
        d["name"] = self.name
        return d


_NAME_RE = re.compile(
    r"^(?P<temporal>[A-Za-z]+)"
    r"(?:_(?P<pre>pre)?E(?P<e>\d+(?:[-/]\d+)?|\d*\.\d+))?"
    r"(?:_A(?P<a>\d+(?:[-/]\d+)?|\d*\.\d+))?"
    r"(?P<masked>-masked)?$"
)


def parse_variant_name(name: str) -> VariantSpec:
    """Inverse of ``VariantSpec.name``; raises ValueError naming the expected grammar."""
    m = _NAME_RE.match(name.strip())
    if not m:
        raise ValueError(
            f"cannot parse variant name {name!r}; expected <temporal>[_[pre]E<r>][_A<r>][-masked], "
            "e.g. 'seqTransf_A1-4' or 'meanP_E4_A4-masked'"
        )
    g = m.groupdict()
    return VariantSpec(
        temporal=g["temporal"],
        excitation=parse_ratio(g["e"]) if g["e"] else None,
        excitation_pos="pre" if g["pre"] else "post",
        aggregation=parse_ratio(g["a"]) if g["a"] else None,
        masked=bool(g["masked"]),
    )
