"""Settings dataclasses checked from one declarative table, as scikit-learn checks its estimators.

A settings class is a dataclass deriving from :class:`Settings`; each field that needs checking says
how in its metadata with :func:`setting`::

    @dataclass
    class AutoencoderSettings(Settings):
        epochs: int = setting(50, Int(1), "training epochs")
        lr: float = setting(1e-3, Real(0, open_low=True), "Adam learning rate")

:meth:`Settings.validate` checks every field against its rule and raises one
:class:`~humwatch.errors.ConfigError` line naming the setting; :meth:`Settings.from_dict` builds
settings from a mapping (a YAML section, command-line options, a saved JSON file) and refuses unknown
keys. Nothing here reads audio or builds a model, so every method's settings are checked before any
work starts.

This is the one way humwatch checks a value: a detector's parameters (``param_rules``), a
command-line option (``commands.options.checked``), a saved file's fields (:func:`check_fields`) and a
function's argument (:func:`check_value`) are checked by these rules, and a range a value has wherever
it is given is one named rule below (``WINDOW_SECONDS``, ``SAMPLE_RATE_HZ``, ...), written once.

Why not pydantic: it would be one more large dependency for ~100 lines, and its messages are
several lines long where humwatch promises one.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from humwatch.errors import ConfigError

__all__ = [
    "Settings",
    "setting",
    "check_value",
    "check_fields",
    "Int",
    "Real",
    "OneOf",
    "Bool",
    "Text",
    "Pattern",
    "Mapping",
    "Optional",
    "Seq",
    "AnyOf",
    "Const",
    "Instance",
    "describe",
    "WINDOW_SECONDS",
    "SAMPLE_RATE_HZ",
    "CHANNEL",
    "FALSE_ALARM_RATE",
    "CONTAMINATION",
    "FRACTION",
    "SEED",
    "FOLDS",
    "ALERT_COUNT",
    "RANDOM_STATE",
]


# ---------------------------------------------------------------------------------------- rules


class Rule:
    """One check: ``__call__(value) -> value`` (possibly normalised) or raises ValueError(what it wants)."""

    def __call__(self, value: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not _is_bool(v)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not _is_bool(v)


@dataclass(frozen=True)
class Int(Rule):
    low: int | None = None
    high: int | None = None

    def __call__(self, v: Any) -> int:
        if not _is_int(v) or (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
            rng = (f" from {self.low} to {self.high}" if self.high is not None else f" {self.low} or more") if self.low is not None else ""
            raise ValueError(f"a whole number{rng}")
        return int(v)


@dataclass(frozen=True)
class Real(Rule):
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    text: bool = True
    """Also read a number written as text (YAML reads 1e-3, without a dot, as a string). False where
    a value is checked but not replaced by the checked one (a detector's parameter, a function's
    argument): there a text would pass the check and reach the arithmetic."""

    def __call__(self, v: Any) -> float:
        if isinstance(v, str) and self.text:  # YAML reads 1e-3 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        ok = _is_real(v) and math.isfinite(float(v))
        if ok and self.low is not None:
            ok = v > self.low if self.open_low else v >= self.low
        if ok and self.high is not None:
            ok = v < self.high if self.open_high else v <= self.high
        if not ok:
            lo = "" if self.low is None else f"{'above' if self.open_low else 'at least'} {self.low:g}"
            hi = "" if self.high is None else f"{'below' if self.open_high else 'at most'} {self.high:g}"
            raise ValueError("a number " + " and ".join(x for x in (lo, hi) if x) if lo or hi else "a finite number")
        return float(v)


@dataclass(frozen=True)
class OneOf(Rule):
    choices: tuple | Callable[[], Sequence[str]]

    def options(self) -> list:
        return list(self.choices() if callable(self.choices) else self.choices)

    def __call__(self, v: Any) -> Any:
        opts = self.options()
        if v not in opts:
            raise ValueError("one of " + ", ".join(map(str, opts)))
        return v


@dataclass(frozen=True)
class Const(Rule):
    """Exactly ``value`` (a keyword such as ``"auto"`` beside a range: ``AnyOf((Const("auto"), ...))``)."""

    value: Any

    def __call__(self, v: Any) -> Any:
        if not (isinstance(v, type(self.value)) and v == self.value):
            raise ValueError(repr(self.value))
        return v


@dataclass(frozen=True)
class Bool(Rule):
    def __call__(self, v: Any) -> bool:
        if not _is_bool(v):
            raise ValueError("true or false")
        return bool(v)


@dataclass(frozen=True)
class Text(Rule):
    empty: bool = False
    """Also accept the empty text."""

    def __call__(self, v: Any) -> str:
        if not isinstance(v, str) or not (self.empty or v.strip()):
            raise ValueError("a text" if self.empty else "a non-empty text")
        return v


@dataclass(frozen=True)
class Pattern(Rule):
    """A text that matches ``regex`` whole; ``what`` says what that is (``a SHA-256 (64 hex digits)``)."""

    regex: str
    what: str

    def __call__(self, v: Any) -> str:
        import re

        if not isinstance(v, str) or re.fullmatch(self.regex, v) is None:
            raise ValueError(self.what)
        return v


@dataclass(frozen=True)
class Mapping(Rule):
    def __call__(self, v: Any) -> dict:
        if not isinstance(v, dict):
            raise ValueError("a mapping (JSON object)")
        return dict(v)


@dataclass(frozen=True)
class Seq(Rule):
    item: Rule
    min_len: int = 1

    def __call__(self, v: Any) -> list:
        if isinstance(v, (str, bytes, dict)) or not hasattr(v, "__iter__"):
            raise ValueError("a list")
        items = list(v)
        if len(items) < self.min_len:
            raise ValueError(f"a list of at least {self.min_len}")
        out = []
        for x in items:
            try:
                out.append(self.item(x))
            except ValueError as e:
                raise ValueError(f"a list, each item {e} (not {x!r})") from None
        return out


@dataclass(frozen=True)
class Optional(Rule):
    rule: Rule

    def __call__(self, v: Any) -> Any:
        return None if v is None else self.rule(v)


@dataclass(frozen=True)
class Instance(Rule):
    """An instance of ``kind`` (e.g. numpy's ``RandomState``); ``what`` says what that is."""

    kind: type
    what: str

    def __call__(self, v: Any) -> Any:
        if not isinstance(v, self.kind):
            raise ValueError(self.what)
        return v


@dataclass(frozen=True)
class AnyOf(Rule):
    """The first of ``rules`` that takes the value (``AnyOf((Const("auto"), CONTAMINATION))``);
    ``what`` says what is wanted when none does (default: each rule's words, joined by "or")."""

    rules: tuple
    what: str = ""

    def __call__(self, v: Any) -> Any:
        wants = []
        for rule in self.rules:
            try:
                return rule(v)
            except ValueError as e:
                wants.append(str(e))
        raise ValueError(self.what or (", ".join(wants[:-1]) + " or " + wants[-1] if len(wants) > 1 else wants[0]))


def check_value(value: Any, rule: Rule, name: str, where: Any = None) -> Any:
    """``rule(value)``, or one ConfigError line ``WHERE: NAME must be ..., got VALUE`` (without
    ``WHERE: `` when ``where`` is None, as for a command-line option; the value's repr cut at 80
    characters: a saved file's field can hold anything)."""
    try:
        return rule(value)
    except ValueError as e:
        shown = repr(value)
        prefix = "" if where is None else f"{where}: "
        raise ConfigError(f"{prefix}{name} must be {e}, got {shown if len(shown) <= 80 else shown[:77] + '...'}") from None


def describe(rule: Rule) -> str:
    """What ``rule`` wants, in the words of its messages (``a number at least 0.5 and at most 600``),
    for a help text."""
    try:
        rule(_Nothing())
    except ValueError as e:
        return str(e)
    return ""  # pragma: no cover - every rule refuses a bare object


class _Nothing:
    """A value no rule takes (what :func:`describe` asks a rule about)."""


# -------------------------------------------------------------------------------- shared ranges
# Each range a value has wherever it is given (an option, a settings file, a saved monitor, an API
# body) is written once, here, and used by every place that checks it.

WINDOW_SECONDS = Real(0.5, 600, text=False)
"""A window's (or clip's) length in seconds: a monitor's windows, the listener's clips, synthetic clips."""
SAMPLE_RATE_HZ = Int(1_000, 384_000)
"""The sample rates humwatch reads (1 to 384 kHz): a file's header, saved audio settings."""
CHANNEL = Int(0, 1023)
"""A microphone channel (0, 1, ...)."""
FALSE_ALARM_RATE = Real(0.0, 1.0, open_low=True, open_high=True, text=False)
"""The share of normal windows allowed to raise an alarm (a threshold's calibration)."""
FOLDS = Int(2)
"""Cross-validation folds."""
SEED = Int(0)
"""A seed (splits, models, synthetic data)."""
FRACTION = Real(0.0, 1.0, open_high=True, text=False)
"""A share of the clips held out (a split's test and validation shares)."""
CONTAMINATION = Real(0.0, 0.5, open_low=True, text=False)
"""A detector's expected share of outliers in its training data (scikit-learn's ``contamination``)."""
RANDOM_STATE = Optional(
    AnyOf(
        (Int(0, 2**32 - 1), Instance(np.random.RandomState, "a numpy RandomState")),
        "None, a whole number from 0 to 2**32 - 1 or a numpy RandomState",
    )
)
"""scikit-learn's ``random_state``: None, a seed or a RandomState."""
ALERT_COUNT = Int(1, 1000)
"""K, N and M of an alert rule (K anomalous of the last N clips open an alert, M normal ones close it)."""


def check_fields(doc: dict, rules: dict[str, Rule], where: Any, prefix: str = "") -> dict:
    """Every field of the saved JSON object ``doc`` checked against ``rules`` ({name: rule}): a field
    without a rule is refused as unknown, a missing one unless its rule is :class:`Optional`.
    Returns ``{name: checked value}``; one ConfigError line naming the first bad field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the document'} must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(rules))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(prefix + str(k) for k in unknown[:5])}")
    missing = [k for k, rule in rules.items() if k not in doc and not isinstance(rule, Optional)]
    if missing:
        raise ConfigError(f"{where}: field {prefix + missing[0]!r} is missing")
    return {k: check_value(doc.get(k), rule, prefix + k, where) for k, rule in rules.items()}


def setting(default: Any, rule: Rule | None = None, help: str = "") -> Any:
    """A dataclass field with its check and a one-line help text (used by the command line)."""
    meta = {"rule": rule, "help": help}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------- settings


class Settings:
    """Base of every settings dataclass (frozen or not): check, build from a mapping, and save as plain JSON."""

    where: ClassVar[str] = "settings"
    """How messages name these settings (e.g. ``autoencoder`` -> ``autoencoder: epochs must be ...``)."""

    def validate(self) -> "Settings":
        for f in fields(self):
            rule = f.metadata.get("rule")
            if rule is None:
                continue
            # object.__setattr__: a frozen settings class (AudioSettings) is checked in its __post_init__
            object.__setattr__(self, f.name, check_value(getattr(self, f.name), rule, f.name, self.where))
        self._check()
        return self

    def _check(self) -> None:
        """Checks across fields (after each field's own); subclasses override."""

    @classmethod
    def from_dict(cls, values: dict | None, where: str | None = None) -> "Settings":
        """Settings from a mapping; unknown keys and bad values are one-line errors naming ``where``."""
        where = where or cls.where
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{where}: settings must be a mapping, got {type(values).__name__}")
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(known)})")
        s = cls(**values)
        try:
            return s.validate()
        except ConfigError as e:
            msg = str(e)
            if where != cls.where and msg.startswith(cls.where + ":"):
                msg = where + msg[len(cls.where) :]
            raise ConfigError(msg) from None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: (f.default if f.default is not MISSING else f.default_factory()) for f in fields(cls)}

    @classmethod
    def rules(cls) -> dict[str, Rule]:
        """{setting: its rule} (for :func:`check_fields` on a saved copy of these settings)."""
        return {f.name: f.metadata["rule"] for f in fields(cls) if f.metadata.get("rule") is not None}

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}
