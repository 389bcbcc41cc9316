"""Fusion (the study's future work), as two methods.

``embed-fusion``: several backbones embed every clip (each cached on disk as ``embed-detect``
caches it); each backbone's embeddings are standardised on the training clips (mean 0, variance
1 per dimension) and divided by the square root of their dimension, so that every backbone weighs
the same in a distance whatever its size (AST's 768 values do not drown the 640 of ``features``
or the 32 of a tiny model); the blocks are concatenated and go to one detector (the shared
detector settings, per section if asked: :mod:`humwatch.sections`).

``score-fusion``: several methods (any of :mod:`humwatch.methods`, each with its settings) are
fitted on the same clips and their scores averaged after putting them on one scale, with
reference scores of normal clips the members did not train on (the normal validation clips; with
fewer than :data:`MIN_REFERENCE` of them, the training clips, which makes a member's reference
optimistic, as ``info()`` says):

* ``rank``: each member's score becomes its quantile among that member's reference scores
  (ties count one half), and the quantiles are averaged. Clips beyond every reference score tie
  at 1; those ties are broken by the mean z-score, by less than half the smallest step of the mean
  quantile (with equal weights, the step is 1 / (2 x members x reference scores)), so the
  tie-break does not reorder clips whose mean quantiles differ;
* ``zscore``: ``(score - mean) / std`` of each member's reference scores, averaged.

Both are functions of one clip's own scores (not of the other clips scored with it), so a
monitor's threshold keeps its meaning. :func:`fuse_scores` is the arithmetic, on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from humwatch.errors import ConfigError, DatasetError
from humwatch.io import damaged
from humwatch.methods.base import BackboneSettings, Method, saved_precision
from humwatch.methods.embed_detect import backbone_info, backbone_record, check_backbone
from humwatch.methods.embedding import DetectorSettings, EmbeddingMethod, _detector_names
from humwatch.settings import Int, OneOf, Seq, Settings, setting

MIN_REFERENCE = 5
HOWS = ("rank", "zscore")


# ------------------------------------------------------------------------------------- score fusion


def fuse_scores(
    scores: Sequence[Sequence[float]], references: Sequence[Sequence[float]], how: str = "rank", weights: Sequence[float] | None = None
) -> np.ndarray:
    """Fuse ``scores[m][i]`` (member m, clip i) with each member's ``references[m]`` (normal scores);
    see the module docstring. NaN where any member's score is NaN."""
    if how not in HOWS:
        raise ConfigError(f"score fusion: how must be one of {', '.join(HOWS)}, got {how!r}")
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if len(references) != S.shape[0]:
        raise ConfigError(f"score fusion: {S.shape[0]} members but {len(references)} reference sets")
    w = np.ones(S.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (S.shape[0],) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"score fusion: weights must be {S.shape[0]} numbers >= 0, not all 0")
    w = w / w.sum()
    Z = np.empty_like(S)
    Q = np.empty_like(S)
    for m, ref in enumerate(references):
        r = np.sort(np.asarray(ref, dtype=np.float64))
        r = r[np.isfinite(r)]
        if r.size < 2:
            raise ConfigError(f"score fusion: member {m + 1} has {r.size} reference score(s); 2 or more are needed")
        Z[m] = (S[m] - r.mean()) / max(r.std(), 1e-12 * max(1.0, abs(r.mean())))
        Q[m] = (np.searchsorted(r, S[m], "left") + np.searchsorted(r, S[m], "right")) / (2.0 * r.size)
    z = w @ Z
    if how == "zscore":
        return z
    step = min(float(wm) for wm in w if wm > 0) / (2.0 * max(len(r) for r in references))
    return w @ Q + 0.49 * step / (1.0 + np.exp(-np.clip(z, -50, 50)))


@dataclass
class ScoreFusionSettings(Settings):
    where: ClassVar[str] = "score-fusion"
    members: list = setting(
        ["embed-detect:backbone=features,detector=mahalanobis,standardize=true", "idnet"],
        Seq(lambda v: v, min_len=1),
        "the member methods (two or more): specs like 'idnet:epochs=10' or {method: NAME, settings: {...}}",
    )
    how: str = setting("rank", OneOf(HOWS), "rank (mean quantile among normal scores) or zscore")
    weights: list | None = setting(None, None, "one weight per member (default: equal)")

    def specs(self):
        """The members as specs (a list written inline, ``[embed-detect:backbone=features,detector=knn, idnet]``,
        comes split at every comma; pieces that name no method are joined back, as on the command line)."""
        from humwatch.methods.spec import join_pieces, spec_from_entry

        return [spec_from_entry(m, where=f"score-fusion member {i + 1}") for i, m in enumerate(join_pieces(self.members))]

    def _check(self) -> None:
        from humwatch.methods import method_settings

        specs = self.specs()
        if len(specs) < 2:
            raise ConfigError(f"score-fusion: members must name two methods or more, got {len(specs)}")
        for i, sp in enumerate(specs):
            if sp.method == "score-fusion":
                raise ConfigError("score-fusion: a member cannot be a score-fusion itself")
            try:
                method_settings(sp.method, sp.settings)
            except ConfigError as e:
                raise ConfigError(f"score-fusion member {i + 1} ({sp.method}): {e}") from None
        if self.weights is not None:
            w = self.weights
            if (
                not isinstance(w, (list, tuple))
                or len(w) != len(specs)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in w)
                or sum(w) <= 0
            ):
                raise ConfigError(f"score-fusion: weights must be {len(specs)} numbers >= 0, not all 0, got {w!r}")


class ScoreFusionMethod(Method):
    name = "score-fusion"
    Settings = ScoreFusionSettings

    def __init__(self, settings, context=None, title=""):
        super().__init__(settings, context, title)
        self.members_: list[Method] = []
        self.references_: list[np.ndarray] = []
        self.reference_note_ = ""

    @property
    def trains_network(self) -> bool:  # as its members do
        from humwatch.methods import method_class

        return any(method_class(sp.method).trains_network for sp in self.settings.specs())

    @property
    def label(self) -> str:
        return f"{self.settings.how}({' + '.join(m.label for m in self.members_) or len(self.settings.members)})"

    def min_fit_clips(self) -> int:
        from humwatch.methods import create_method

        return max(create_method(sp.method, sp.settings, self.context).min_fit_clips() for sp in self.settings.specs())

    def fit(self, clips, val=(), runtime=None):
        """Every member fits on ``clips`` (each keeps the clips it learns from); then the reference scores."""
        from humwatch.runtime import active

        with active(runtime):
            return self._fit_members(clips, val)

    def _fit_members(self, clips, val):
        from humwatch.methods import create_method

        clips, val = list(clips), list(val)
        normal = [c for c in clips if not c.is_anomalous]
        if not normal:
            raise DatasetError(f"{self.title}: no normal training clips to learn from")
        self.members_ = []
        for i, sp in enumerate(self.settings.specs()):
            m = create_method(sp.method, sp.settings, self.context, title=f"{self.title} [{i + 1}] {sp.name}")
            self.members_.append(m.fit(clips, val))
        ref = [c for c in val if not c.is_anomalous]
        if len(ref) >= MIN_REFERENCE:
            self.reference_note_ = f"{len(ref)} normal validation clips"
        else:
            ref = normal
            self.reference_note_ = f"{len(ref)} training clips (fewer than {MIN_REFERENCE} normal validation clips: members' references are in-sample, optimistic)"
        self.references_ = []
        for m in self.members_:
            r = m.score(ref)
            self.references_.append(r[np.isfinite(r)])
        self.n_train_ = max(m.n_train_ for m in self.members_)
        self.fitted_ = True
        return self

    def _score(self, clips):
        member = [m.score(clips) for m in self.members_]
        fused = fuse_scores(np.nan_to_num(member, nan=0.0), self.references_, self.settings.how, self.settings.weights)
        fused[np.any(~np.isfinite(member), axis=0)] = np.nan
        out = {"score": fused}
        for i, s in enumerate(member):
            out[f"m{i + 1}"] = s
        return out

    def embeddings(self) -> dict:
        out: dict = {}
        for m in self.members_:
            for k, v in m.embeddings().items():
                out.setdefault(k, v)
        return out

    def info(self) -> dict:
        infos = [m.info() for m in self.members_]
        return {
            "weights": "; ".join(f"{m.label}: {i.get('weights', 'n/a')}" for m, i in zip(self.members_, infos)),
            "random_init": any(bool(i.get("random_init")) for i in infos),
            "reference": self.reference_note_,
            "members": [{"method": m.name, "label": m.label, "reading": f"m{k + 1}"} for k, m in enumerate(self.members_)],
        }

    def _save(self, directory: Path) -> dict:
        for i, m in enumerate(self.members_):
            m.save(directory / "members" / str(i + 1))
        return {"references": [r.tolist() for r in self.references_], "reference_note": self.reference_note_}

    @classmethod
    def _load(cls, directory: Path, settings, context, state: dict, doc: dict, **overrides):
        from humwatch.methods import load_method

        m = cls(settings, context)
        n = len(settings.specs())
        m.members_ = [load_method(directory / "members" / str(i + 1), context, checked=True, **overrides) for i in range(n)]
        try:
            m.references_ = [np.asarray(r, dtype=np.float64) for r in state["references"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{directory}: reference scores unusable ({e})") from None
        if len(m.references_) != n:
            raise ConfigError(f"{directory}: {len(m.references_)} reference sets for {n} members")
        m.reference_note_ = str(state.get("reference_note", ""))
        return m


# --------------------------------------------------------------------------------- embedding fusion


def _backbone_entry(v: Any) -> dict:
    """A backbone named by itself (``"features"``) or a mapping of backbone settings, checked."""
    entry = {"backbone": v} if isinstance(v, str) else v
    if not isinstance(entry, dict):
        raise ValueError("a backbone name or a mapping of backbone settings")
    return BackboneSettings.from_dict(entry, where="embed-fusion backbone").to_dict()


@dataclass
class EmbedFusionSettings(DetectorSettings):
    where: ClassVar[str] = "embed-fusion"
    backbones: list = setting(
        ["features", {"backbone": "ast"}],
        Seq(_backbone_entry, min_len=2),
        "the backbones: names, or mappings of backbone settings (backbone, weights, precision, backbone_config)",
    )
    detector: str = setting("mahalanobis", OneOf(_detector_names), "anomaly detector on the fused embeddings")
    batch_size: int = setting(8, Int(1), "clips per forward pass")


class EmbedFusionMethod(EmbeddingMethod):
    name = "embed-fusion"
    Settings = EmbedFusionSettings
    embedding_name = "fusion"

    def __init__(self, settings, context=None, title=""):
        super().__init__(settings, context, title)
        self.backbones_: list = []
        self.scalers_: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def label(self) -> str:
        return "+".join(b["backbone"] for b in self.settings.backbones) + f"+{self.settings.detector}"

    def _settings_of(self, entry: dict) -> BackboneSettings:
        return BackboneSettings.from_dict(entry, where="embed-fusion backbone")

    def _raw(self, clips) -> tuple[list, list[np.ndarray]]:
        """Every backbone's embeddings of the clips every backbone could read."""
        if not self.backbones_:
            self.backbones_ = [self.context.backbone(self._settings_of(b)) for b in self.settings.backbones]
        sets = [
            self.runtime.engine.embed(clips, bb, cache_dir=self.runtime.cache_dir, batch_size=self.settings.batch_size, reader=self.reader)
            for bb in self.backbones_
        ]
        keep = set.intersection(*({c.key for c in s.clips} for s in sets))
        kept = [c for c in sets[0].clips if c.key in keep]
        blocks = []
        for s in sets:
            row = {c.key: i for i, c in enumerate(s.clips)}
            blocks.append(s.X[[row[c.key] for c in kept]].astype(np.float64))
        return kept, blocks

    def _fused(self, kept, blocks):
        from humwatch.embed import EmbeddingSet

        parts = [(B - mu) / sd / np.sqrt(B.shape[1]) for B, (mu, sd) in zip(blocks, self.scalers_)]
        X = np.concatenate(parts, axis=1) if kept else np.zeros((0, sum(len(mu) for mu, _ in self.scalers_)))
        return self._kept(EmbeddingSet(X.astype(np.float32), kept))

    def _train_embeddings(self, clips, val):
        kept, blocks = self._raw(clips)
        self.scalers_ = [(B.mean(axis=0), np.where(B.std(axis=0) > 1e-12, B.std(axis=0), 1.0)) for B in blocks] if kept else []
        if not kept:
            from humwatch.embed import EmbeddingSet

            return EmbeddingSet(np.zeros((0, 1), np.float32), [])
        return self._fused(kept, blocks)

    def _embed(self, clips):
        return self._fused(*self._raw(clips))

    def info(self) -> dict:
        if not self.backbones_:
            return {}
        infos = [backbone_info(bb) for bb in self.backbones_]
        return {
            "weights": "; ".join(f"{bb.name}: {i['weights']}" for bb, i in zip(self.backbones_, infos)),
            "random_init": any(i["random_init"] for i in infos),
            "embedding_dim": sum(i["embedding_dim"] for i in infos),
            **self.detector_info(),
        }

    def _save(self, directory: Path) -> dict:
        from safetensors.numpy import save_file

        from humwatch.io import atomic_path

        arrays = {f"{k}:{i}": np.ascontiguousarray(v) for i, (mu, sd) in enumerate(self.scalers_) for k, v in (("mean", mu), ("std", sd))}
        with atomic_path(directory / "scalers.safetensors", suffix=".safetensors") as tmp:
            save_file(arrays, str(tmp))
        return {**self._save_detector(directory), "backbones": [backbone_record(bb) for bb in self.backbones_]}

    @classmethod
    def _load(cls, directory: Path, settings, context, state: dict, doc: dict, **overrides):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        if overrides.get("weights") is not None:
            raise ConfigError("--weights does not apply to embed-fusion (each backbone names its own weights)")
        m = cls(settings, context)
        m.scorer_ = cls._load_detector(directory, state, settings, context.seed)
        records = state.get("backbones") or []
        if len(records) != len(settings.backbones):
            raise ConfigError(f"{directory}: {len(records)} saved backbones for {len(settings.backbones)} in the settings")
        m.backbones_ = [context.backbone(saved_precision(m._settings_of(b), rec)) for b, rec in zip(settings.backbones, records)]
        for bb, rec in zip(m.backbones_, records):
            check_backbone(directory, bb, rec)
        try:
            arrays = load_file(str(directory / "scalers.safetensors"))
            m.scalers_ = [(arrays[f"mean:{i}"].astype(np.float64), arrays[f"std:{i}"].astype(np.float64)) for i in range(len(m.backbones_))]
        except (KeyError, OSError, SafetensorError) as e:
            raise damaged(directory / "scalers.safetensors", e) from None
        if any(len(mu) != bb.embedding_dim for (mu, _), bb in zip(m.scalers_, m.backbones_)):
            raise ConfigError(f"{directory}: saved scalers do not fit the backbones' embedding sizes")
        return m
