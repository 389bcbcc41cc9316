"""What every method that ends in "a detector on embeddings" shares: the detector's settings
(:class:`DetectorSettings`, with the per-section and domain-shift options of
:mod:`humwatch.sections`) and the fitting, scoring and saving around it (:class:`EmbeddingMethod`).

A subclass says how clips become embeddings (``_embed``; ``_train_embeddings`` when the embedder
itself learns from the training clips first, as ``idnet`` and ``aux-finetune`` do); the base
class fits a :class:`~humwatch.sections.SectionDetector` on the training embeddings, scores test
embeddings with it (``score``, and ``votes`` for ``lof-vote``), keeps every embedding set for
t-SNE when the call's runtime says so (``keep_embeddings``: a run's; never a monitor's), and saves the detector(s) as ``detector.safetensors`` plus their JSON state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from humwatch.errors import ConfigError, DatasetError
from humwatch.io import damaged
from humwatch.methods.base import Method, scores_at
from humwatch.settings import Bool, Int, Mapping, OneOf, Settings, setting

DETECTOR_FILE = "detector.safetensors"


def _detector_names() -> list[str]:
    from humwatch.detectors import list_detectors

    return list_detectors()


@dataclass
class DetectorSettings(Settings):
    """The detector on the embeddings, and how it is split by section (see :mod:`humwatch.sections`)."""

    detector: str = setting("lof-vote", OneOf(_detector_names), "anomaly detector on the embeddings")
    detector_params: dict = setting({}, Mapping(), 'detector hyper-parameters (e.g. {"n_neighbors": 4})')
    standardize: bool = setting(False, Bool(), "standardise embeddings before the detector")
    per_section: bool = setting(False, Bool(), "one detector per machine id / section (else one per training group)")
    source_centres: int = setting(
        16, Int(0), "sections with source and target clips: k-means centres replace the source clips (0: keep them all)"
    )
    normalize: bool = setting(False, Bool(), "standardise scores per section by cross-fitted normal scores")

    def _check(self) -> None:
        self.make_detector()  # unknown detector parameters or bad values fail now

    def make_detector(self):
        from humwatch.detectors import create_detector

        return create_detector(self.detector, standardize=self.standardize, **self.detector_params)

    def section_detector(self, seed: int = 0):
        from humwatch.sections import SectionDetector

        return SectionDetector(self.make_detector, self.per_section, self.source_centres, self.normalize, seed)


class EmbeddingMethod(Method):
    """Base of the methods that score with a detector on embeddings (see the module docstring)."""

    embedding_name: ClassVar[str] = "embeddings"

    def __init__(self, settings, context=None, title=""):
        super().__init__(settings, context, title)
        self.scorer_ = None
        self._seen: list = []  # embedding sets kept for t-SNE (only by a runtime with keep_embeddings)
        self.far_basis_ = None  # (mean, spread) of the training embeddings: far_scores' probes

    # -- for subclasses ----------------------------------------------------------------------------
    def _embed(self, clips):
        """An :class:`~humwatch.embed.EmbeddingSet` of ``clips`` (bad ones left out by the reader)."""
        raise NotImplementedError  # pragma: no cover

    def _train_embeddings(self, clips, val):
        """The training clips' embeddings (after training the embedder, for methods that do)."""
        return self._embed(clips)

    @property
    def embedding_key(self) -> str:
        """The name the run directory saves the embeddings under (``embeddings/<name>.npz``)."""
        return self.embedding_name

    # -- the method --------------------------------------------------------------------------------
    def _kept(self, emb):
        if self.runtime.keep_embeddings:
            self._seen.append(emb)
        return emb

    def _fit(self, clips, val):
        emb = self._train_embeddings(clips, val)
        if len(emb) == 0:
            raise DatasetError(f"{self.title}: no normal training clips could be read")
        self._fitted_on(emb)
        return len(emb)

    def _fitted_on(self, emb) -> None:
        self.scorer_ = self.new_detector(emb.X, emb.clips)
        X = emb.X.astype(np.float64)
        self.far_basis_ = (X.mean(axis=0), X.std(axis=0) + 1e-6)

    # -- embed once, fit the detector many times (a monitor's calibration folds: humwatch.folds) -------
    @property
    def fixed_embedder(self) -> bool:
        """The embeddings do not depend on the training clips (no ``_train_embeddings`` of its own,
        unsupervised): a clip embeds the same whatever the method is fitted on, so cross-fitting
        may embed every clip once and refit only the detector."""
        return type(self)._train_embeddings is EmbeddingMethod._train_embeddings and not self.supervised

    def embed(self, clips, runtime=None):
        """The :class:`~humwatch.embed.EmbeddingSet` of ``clips`` as fitting and scoring compute it."""
        from humwatch.runtime import active

        with active(runtime):
            return self._embed(list(clips))

    def new_detector(self, X, clips):
        """A new section detector of these settings fitted on embeddings ``X`` of ``clips``."""
        return self.settings.section_detector(self.context.seed).fit(X, clips)

    def heldout_scores(self, X, clips, X_held, held) -> np.ndarray:
        """The scores of embeddings ``X_held`` (of clips ``held``) by a detector of these settings
        fitted on ``X`` (of ``clips``): :meth:`~humwatch.sections.SectionDetector.heldout_scores`."""
        return self.settings.section_detector(self.context.seed).heldout_scores(X, clips, X_held, held)

    def fit_embedded(self, emb) -> "EmbeddingMethod":
        """``fit(clips)`` when ``emb = self.embed(clips)`` is already computed (``fixed_embedder`` only)."""
        if not self.fixed_embedder:
            raise ConfigError(f"{self.title}: its embeddings depend on the training clips; use fit()")
        if len(emb) == 0:
            raise DatasetError(f"{self.title}: no normal training clips could be read")
        self._fitted_on(emb)
        self.n_train_ = len(emb)
        self.fitted_ = True
        return self

    def _score(self, clips):
        emb = self._embed(clips)
        return {k: scores_at(clips, emb.clips, v) for k, v in self.scorer_.readings(emb.X, emb.clips).items()}

    def min_fit_clips(self) -> int:
        return self.settings.make_detector()._min_samples()

    def far_scores(self) -> np.ndarray:
        """The detector's scores of embeddings 1,000 spreads away from the training embeddings'
        mean, in three directions (all up, all down, alternating); they belong to no known section."""
        from humwatch.data.clips import Clip

        if self.far_basis_ is None:
            raise ConfigError(f"{self.title}: far_scores needs the method as fitted here (not loaded)")
        mu, sd = self.far_basis_
        alt = np.where(np.arange(len(mu)) % 2 == 0, 1.0, -1.0)
        far = np.stack([mu + 1e3 * sd, mu - 1e3 * sd, mu + 1e3 * sd * alt])
        return self.scorer_.anomaly_score(far, [Clip(f"far{i}", "probe", "probe", 1) for i in range(3)])

    def embeddings(self) -> dict:
        from humwatch.embed import EmbeddingSet

        if not self._seen:
            return {}
        return {self.embedding_key: EmbeddingSet.concat(self._seen, self._seen[0].X.shape[1])}

    def detector_info(self) -> dict:
        s = self.scorer_
        if s is None or s.plain:
            return {}
        return {"sections": s.summary()}

    # -- saving ------------------------------------------------------------------------------------
    def _save_detector(self, directory: Path) -> dict:
        from safetensors.numpy import save_file

        from humwatch.io import atomic_path

        meta, arrays = self.scorer_.state()
        arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        with atomic_path(directory / DETECTOR_FILE, suffix=".safetensors") as tmp:
            save_file(arrays, str(tmp))
        return {**meta, "arrays": {k: list(v.shape) for k, v in arrays.items()}}

    @staticmethod
    def _load_detector(directory: Path, state: dict, settings: DetectorSettings, seed: int = 0):
        sd = load_detector(
            directory,
            state,
            per_section=settings.per_section,
            source_centres=settings.source_centres,
            normalize=settings.normalize,
            seed=seed,
        )
        check_detector_settings(directory, sd, settings)
        return sd


def _params(det) -> str:
    from humwatch.detectors.base import _json_value

    return json.dumps({k: _json_value(v) for k, v in det.get_params(deep=False).items() if k != "random_state"}, sort_keys=True)


def check_detector_settings(directory: Path, sd, settings: DetectorSettings) -> None:
    """Refuse saved detectors that are not the kind, or do not have the parameters, the method's
    settings say (a state edited apart from the settings would score otherwise)."""
    want = settings.make_detector()
    for sec in sd.sections_.values():
        det = sec.detector
        if det.name != want.name or _params(det) != _params(want):
            raise ConfigError(
                f"{directory}: the saved detector ({det.name} {_params(det)}) is not the one its settings give ({want.name} {_params(want)})"
            )


def load_detector(directory: str | Path, state: dict, **settings):
    """The fitted :class:`~humwatch.sections.SectionDetector` of a saved method folder
    (``detector.safetensors`` and the method state's detector and ``arrays``); needs no backbone
    (exported monitors use it too: :mod:`humwatch.onnxrun`). ``settings``: SectionDetector's own."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from humwatch.sections import SectionDetector

    directory = Path(directory)
    path = directory / DETECTOR_FILE
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise damaged(path, e) from None
    shapes = {k: list(v.shape) for k, v in arrays.items()}
    if shapes != state.get("arrays"):
        raise ConfigError(f"{path}: array shapes {shapes} differ from method.json {state.get('arrays')}")
    try:
        return SectionDetector.from_state(state, arrays, **settings)
    except ConfigError as e:
        raise ConfigError(f"{directory}: {e}") from None
