"""A method with its settings, written in one line: ``NAME[:KEY=VALUE,KEY=VALUE,...]``.

The one syntax ``humwatch compare --methods``, ``score-fusion``'s members and spec files share::

    embed-detect:backbone=features,detector=knn,standardize=true
    idnet:epochs=10,score=classifier
    embed-fusion:backbones=[features, {backbone: ast, weights: none}],detector=knn
    autoencoder

Values are read as YAML flow values (``true``, ``3``, ``1e-3``, ``[a, b]``, ``{k: v}``), and a
value YAML cannot read stays text; commas inside brackets or quotes do not split. ``on``/``off``/
``yes``/``no`` stay words (YAML 1.1 would make them booleans; ``outlier_exposure=off`` means the
word). A name may be given to the entry as ``NAME=SPEC`` (``knn1=embed-detect:detector=knn``),
which ``compare`` uses as the run's folder name.

A file (YAML or JSON) holds a mapping of named entries, each a spec string or a mapping
``{method: NAME, settings: {...}}``::

    features-knn: embed-detect:backbone=features,detector=knn,standardize=true
    idnet: {method: idnet, settings: {epochs: 10}}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from humwatch.errors import ConfigError, one_line

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_WORDS = {"on", "off", "yes", "no", "y", "n"}


@dataclass
class MethodSpec:
    """A method name, its settings (a mapping, unchecked here) and a short name for tables and folders."""

    method: str
    settings: dict = field(default_factory=dict)
    name: str = ""
    given: str = field(default="", repr=False)
    """The spec as it was written (before its settings were completed with the defaults)."""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = default_name(self.method, self.settings)
        if not _NAME.match(self.name):
            raise ConfigError(f"method name {self.name!r}: use letters, digits and . _ + - only")

    def to_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "settings": self.settings}

    def text(self) -> str:
        """The spec as one line (what :func:`parse_spec` reads back)."""
        if not self.settings:
            return self.method
        import yaml

        def flow(v: Any) -> str:
            return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()

        return self.method + ":" + ",".join(f"{k}={flow(v)}" for k, v in self.settings.items())


def default_name(method: str, settings: dict) -> str:
    """``embed-detect`` with ``backbone=features, detector=knn`` -> ``features-knn``; other
    methods their name, plus the score they use when it is not their default."""
    parts = []
    if settings.get("backbone"):
        parts.append(str(settings["backbone"]))
    if method == "embed-detect":
        parts.append(str(settings.get("detector", "lof-vote")))
    else:
        parts.insert(0 if not parts else 1, method)
    if method in ("idnet", "aux-finetune") and settings.get("score") == "classifier":
        parts.append("classifier")
    name = "-".join(parts) or method
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets, braces and quotes."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == sep and depth == 0 and not quote:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0 or quote:
        raise ConfigError(f"method spec {text!r}: unbalanced brackets or quotes")
    out.append("".join(cur))
    return out


def parse_value(raw: str) -> Any:
    import yaml

    raw = raw.strip()
    if raw.lower() in _WORDS:
        return raw
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def parse_spec(text: str, name: str = "") -> MethodSpec:
    """``NAME[:KEY=VALUE,...]`` (optionally ``LABEL=`` in front) -> :class:`MethodSpec`."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("empty method spec (use e.g. embed-detect:backbone=features,detector=knn)")
    text = text.strip()
    head, colon, rest = text.partition(":")
    if "=" in head:
        label, _, head = head.partition("=")
        name = name or label.strip()
    method = head.strip()
    settings: dict = {}
    if colon and rest.strip():
        for item in _split_top(rest):
            key, eq, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or not key:
                raise ConfigError(f"method spec {text!r}: {item.strip()!r} is not KEY=VALUE")
            if key in settings:
                raise ConfigError(f"method spec {text!r}: {key} is given twice")
            settings[key] = parse_value(raw)
    return MethodSpec(method, settings, name, given=f"{method}:{rest.strip()}" if colon and rest.strip() else method)


def starts_method(piece: str) -> bool:
    """Whether a piece of a method list names a method (``idnet``, ``idnet:...``, ``label=idnet:...``)."""
    from humwatch.methods import METHODS

    head = piece.strip().split(":", 1)[0]
    return (head.split("=", 1)[1] if "=" in head else head).strip() in METHODS


def join_pieces(pieces) -> list:
    """Pieces of a comma-split method list back into specs: a piece that does not name a method
    (``detector=knn``) is one more setting of the spec before it; anything not a string (a mapping
    entry) stays itself."""
    out: list = []
    for p in pieces:
        if isinstance(p, str) and p.strip() and out and isinstance(out[-1], str) and not starts_method(p):
            out[-1] += "," + p.strip()
        elif not (isinstance(p, str) and not p.strip()):
            out.append(p.strip() if isinstance(p, str) else p)
    return out


def split_method_list(values) -> list[str]:
    """Method specs from ``--methods`` values: each value is split on commas outside brackets and
    the pieces joined again where a piece does not name a method (:func:`join_pieces`), so
    ``autoencoder,embed-detect:backbone=features,detector=knn`` is two methods."""
    return join_pieces([piece for v in values for piece in _split_top(v)])


def spec_from_entry(entry: Any, name: str = "", where: str = "") -> MethodSpec:
    """A spec string, or ``{method: NAME, settings: {...}}`` (optionally ``name``)."""
    if isinstance(entry, MethodSpec):
        return entry
    if isinstance(entry, str):
        return parse_spec(entry, name)
    if isinstance(entry, dict) and isinstance(entry.get("method"), str):
        unknown = sorted(set(entry) - {"method", "settings", "name"})
        if unknown:
            raise ConfigError(f"{where or 'method entry'}: unknown key(s) {', '.join(unknown)} (use method, settings, name)")
        settings = entry.get("settings") or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{where or 'method entry'}: settings must be a mapping")
        return MethodSpec(entry["method"], dict(settings), str(entry.get("name") or name))
    raise ConfigError(
        f"{where or 'method entry'}: expected a spec like 'idnet:epochs=10' or {{method: NAME, settings: {{...}}}}, got {entry!r}"
    )


def read_spec_file(path: str | Path) -> list[MethodSpec]:
    """The named entries of a YAML or JSON file (see the module docstring), in file order."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such method file")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: not readable YAML or JSON ({one_line(e)})") from None
    if isinstance(doc, dict) and isinstance(doc.get("methods"), (dict, list)):
        doc = doc["methods"]
    if isinstance(doc, list):
        return [spec_from_entry(e, where=f"{p}: entry {i + 1}") for i, e in enumerate(doc)]
    if not isinstance(doc, dict) or not doc:
        raise ConfigError(f"{p}: expected a mapping of named method specs")
    return [spec_from_entry(e, str(k), where=f"{p}: {k}") for k, e in doc.items()]


def check_unique(specs: list[MethodSpec]) -> list[MethodSpec]:
    seen: dict[str, MethodSpec] = {}
    for s in specs:
        if s.name in seen:
            raise ConfigError(f"two methods are named {s.name!r}; name them (NAME=SPEC on the command line, or keys in a method file)")
        seen[s.name] = s
    return specs
