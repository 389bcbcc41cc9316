"""The method interface: a new method is one class and one registry line (the worked example of
docs/architecture.md), and every method gets checked settings, the bad-file policy, saving with a
manifest and monitors for free."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from helpers import make_mimii_tree

from humwatch.errors import AudioError, ConfigError
from humwatch.methods import METHODS, Context, create_method, load_method
from humwatch.methods.base import Method, scores_at
from humwatch.runtime import Runtime
from humwatch.settings import OneOf, Settings, setting


@dataclass
class LoudnessSettings(Settings):
    where: ClassVar[str] = "loudness"
    statistic: str = setting("rms", OneOf(("rms", "peak")), "what 'loud' means")


class LoudnessMethod(Method):
    """docs/architecture.md's example method, verbatim in substance."""

    name = "loudness"
    Settings = LoudnessSettings

    def _level(self, y):
        return float(np.sqrt(np.mean(y**2)) if self.settings.statistic == "rms" else np.abs(y).max())

    def _fit(self, clips, val):
        kept, ys = self.reader.read_all(clips, f"{self.title}: levels")
        levels = [self._level(y) for y in ys]
        self.mean_, self.std_ = float(np.mean(levels)), float(np.std(levels) + 1e-9)
        return len(kept)

    def _score(self, clips):
        kept, ys = self.reader.read_all(clips, f"{self.title}: test levels")
        z = [abs(self._level(y) - self.mean_) / self.std_ for y in ys]
        return {"score": scores_at(clips, kept, z)}

    def _save(self, directory):
        return {"mean": self.mean_, "std": self.std_}

    @classmethod
    def _load(cls, directory, settings, context, state, doc, **overrides):
        m = cls(settings, context)
        m.mean_, m.std_ = state["mean"], state["std"]
        return m


@pytest.fixture
def loudness(monkeypatch):
    monkeypatch.setitem(METHODS, "loudness", "test_methods:LoudnessMethod")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_mimii_tree(tmp_path_factory.mktemp("m"), machines=("fan",), ids=("00",), n_normal=16, n_anomalous=4)


def test_a_new_method_runs_everywhere_with_one_registry_line(loudness, tree, tmp_path):
    from humwatch.calibrate import fit_monitor
    from humwatch.data import load_dataset
    from humwatch.monitor import Monitor
    from humwatch.pipeline import RunConfig, run

    res = run(
        RunConfig(data=str(tree), method="loudness", settings={"statistic": "peak"}, save_models=True), tmp_path / "run", progress=False
    )
    assert res.info["settings"] == {"statistic": "peak"} and res.rows[0]["auc"] > 0.5  # bursts are loud
    back = load_method(tmp_path / "run/models/fan")
    test = [c for c in res.clips if c.split == "test"]
    np.testing.assert_allclose(back.score(test), [res.scores[c.path] for c in test])
    with pytest.raises(ConfigError, match="loudness: statistic must be one of rms, peak"):
        RunConfig(data=str(tree), method="loudness", settings={"statistic": "median"}).validate()
    mon, summary = fit_monitor(load_dataset(tree), "loudness", false_alarm_rate=0.34, threshold_method="percentile", progress=False)
    mon.save(tmp_path / "mon")
    assert Monitor.load(tmp_path / "mon").threshold == pytest.approx(summary["threshold"])


def test_score_gives_nan_for_skipped_clips_and_counts_them_once(loudness, tree, tmp_path):
    from humwatch.data import load_dataset

    clips = load_dataset(tree)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEnot really")
    from humwatch.data.clips import Clip

    odd = Clip(str(bad), "fan", "id_00", 0)
    rt = Runtime(on_bad="skip", progress=False)
    m = create_method("loudness", {}, Context()).fit(clips[:8], runtime=rt)
    s = m.score([clips[10], odd, clips[11]], runtime=rt)
    assert np.isfinite(s[[0, 2]]).all() and np.isnan(s[1])
    m.score([odd], runtime=rt)
    assert [p for p, _ in rt.skipped] == [str(bad)]  # once per file, however often it is asked for
    strict = create_method("loudness", {}, Context()).fit(clips[:8], runtime=Runtime(progress=False))
    with pytest.raises(AudioError, match="bad.wav"):
        strict.score([odd])


def test_fit_refuses_no_normal_clips_and_unfitted_use(loudness, tree):
    from humwatch.data import load_dataset

    anomalous = [c for c in load_dataset(tree) if c.is_anomalous]
    m = create_method("loudness", {}, Context(), title="fan")
    with pytest.raises(ConfigError, match="not fitted"):
        m.score(anomalous)
    with pytest.raises(Exception, match="fan: no normal training clips"):
        m.fit(anomalous)


def test_saved_methods_are_sealed(loudness, tree, tmp_path):
    from humwatch.data import load_dataset

    m = create_method("loudness", {}, Context()).fit(load_dataset(tree))
    m.save(tmp_path / "m")
    (tmp_path / "m" / "method.json").write_text((tmp_path / "m" / "method.json").read_text().replace('"mean"', '"mean" '))
    with pytest.raises(ConfigError, match="checksum"):
        load_method(tmp_path / "m")
    m.save(tmp_path / "m2")
    (tmp_path / "m2" / "extra.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not listed"):
        load_method(tmp_path / "m2")
    with pytest.raises(ConfigError, match="no such folder"):
        load_method(tmp_path / "none")
