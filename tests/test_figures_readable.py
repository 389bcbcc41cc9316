"""Figures a person can read: saved at 150 dpi or more, attention maps as few large panels with a
colour bar and without the AST's padding, and an alarm summary that says how far normal clips vary."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest

SR = 16000


def test_every_saved_figure_is_at_least_150_dpi_with_the_dpi_in_the_png(tmp_path):
    from PIL import Image

    from humwatch.explain._plot import FIGURE_DPI, figure_png, pyplot, save_figure

    assert FIGURE_DPI >= 150
    plt = pyplot()
    for palette in (True, False):
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.plot([0, 1], [0, 1])
        ax.set_title("a title")
        assert ax.title.get_fontsize() >= 11  # the title size set in one place
        path = save_figure(fig, tmp_path / f"f{palette}.png", dpi=40, palette=palette)  # asked for less: still 150
        img = Image.open(path)
        assert img.size == (4 * FIGURE_DPI, 2 * FIGURE_DPI)
        assert [round(v) for v in img.info["dpi"]] == [FIGURE_DPI, FIGURE_DPI]
    fig, _ = plt.subplots(figsize=(3, 1))
    assert Image.open(io.BytesIO(figure_png(fig))).size == (3 * FIGURE_DPI, FIGURE_DPI)


def test_ast_real_frames_counts_the_clips_frames_not_the_padding():
    from humwatch.explain.figures import ast_real_frames
    from humwatch.features import ast_features

    for seconds in (1.0, 4.2, 10.0):
        y = np.random.default_rng(0).standard_normal(int(seconds * SR)).astype(np.float32) * 0.1
        x = ast_features(y)  # [1024, 128], zero log-fbank past the clip's end
        n = ast_real_frames(len(y), 1024)
        pad = (0.0 - -4.2677393) / (4.5689974 * 2)  # a zero frame after the AudioSet normalisation
        assert np.allclose(x[n:], pad) and not np.allclose(x[n - 1], pad)
    assert ast_real_frames(30 * SR, 1024) == 1024


def test_attention_maps_are_few_large_panels_with_a_colour_bar_and_no_padding(tmp_path, monkeypatch):
    import soundfile as sf

    import humwatch.explain._plot as plot
    from humwatch.explain import explain_clips
    from humwatch.explain.figures import ast_real_frames

    t = np.arange(10 * SR) / SR  # the study's 10 s clips: 998 frames of the AST's 1024
    paths = []
    for k in range(5):
        y = 0.3 * np.sin(2 * np.pi * (300 + 200 * k) * t) + 0.01 * np.random.default_rng(k).standard_normal(t.size)
        paths.append(tmp_path / f"c{k}.wav")
        sf.write(str(paths[-1]), y.astype(np.float32), SR)
    saved = {}
    real = plot.save_figure

    def keep(fig, path, *a, **k):
        saved[path.name] = (fig, [list(ax.images) for ax in fig.axes], fig.get_size_inches().copy(), len(fig.axes))
        return real(fig, path, *a, **k)

    monkeypatch.setattr(plot, "save_figure", keep)
    tiny = {
        "ast": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=1024),
        "resnext101_32x8d": dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8),
    }
    res = explain_clips(paths, tmp_path / "out", weights="none", configs=tiny, n_map_clips=5)
    assert "attention_maps" in res.figures
    assert any("first 4 of 5" in n for n in res.notes)
    fig, images, size, n_axes = saved["attention_maps.png"]
    panels = [im for im in images if im]
    assert len(panels) == 4 * 2  # 4 clips, AST beside the CNN
    assert n_axes == len(panels) + 1  # and one colour bar
    assert size[0] / 2 >= 6.0  # each panel at least 6 inches wide
    n = ast_real_frames(10 * SR, 1024)
    assert n == 998
    ast = images[0]
    assert ast[0].get_array().shape == (128, n) and ast[1].get_array().shape == (128, n)  # cropped: no padding stripe
    assert ast[0].get_extent()[1] == pytest.approx(n * 0.01)
    heat = np.asarray(ast[1].get_array())
    assert heat.min() == pytest.approx(0.0) and heat.max() == pytest.approx(1.0)
    maps = np.load(res.out_dir / "attention_maps.npz")
    assert maps["clip0_ast_rollout"].shape == (128, 1024)  # the saved maps stay on the whole input


# ----------------------------------------------------------------------------- the alarm summary


def _normal(rng, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    gain = 10 ** (rng.normal(0, 1.0) / 20)  # normal clips differ by about a dB in level
    return (gain * (0.3 * np.sin(2 * np.pi * (440 + rng.normal(0, 2)) * t) + 0.02 * rng.standard_normal(t.size))).astype(np.float32)


class _Monitor:
    """What explain_alarm needs of a monitor: windows and scores, the audio settings, a threshold, a reference."""

    def __init__(self, reference, score):
        from humwatch.audio import AudioSettings

        self.reference, self.threshold, self.audio, self._score = reference, 1.0, AudioSettings(SR, 2.0), score

    def score_windows(self, clips, skip_bad=False, progress=False):
        return [SimpleNamespace(start=0.0)], np.array([self._score]), None


def test_alarm_summary_says_how_far_normal_clips_vary(tmp_path):
    from humwatch.data.clips import Clip
    from humwatch.explain.alarm import NormalReference, explain_alarm

    rng = np.random.default_rng(0)
    ref = NormalReference.from_signals((_normal(rng) for _ in range(40)), SR)
    assert ref.clip_spread is not None and ref.clip_spread.shape == (64,) and (ref.clip_spread > 0.5).all()
    assert (ref.clip_spread > ref.clip_spread.min()).any()  # per band

    within = 0
    for k in range(20):  # fresh normal clips: the summary says they are within normal variation
        clip = Clip.from_array(_normal(rng), SR, f"normal{k}.wav", "fan", "00", 0)
        res = explain_alarm(_Monitor(ref, 0.5), clip)
        assert res.summary.startswith("normal: score")
        within += "every band within normal variation" in res.summary and "normal clips vary by ±" in res.summary
    assert within >= 17, within

    y = _normal(rng)
    t = np.arange(y.size) / SR
    y = y + 0.05 * np.sin(2 * np.pi * 3100 * t).astype(np.float32)
    res = explain_alarm(_Monitor(ref, 2.0), Clip.from_array(y, SR, "bad.wav", "fan", "00", 1))
    b = res.bands[0]
    assert res.summary.startswith("ALARM: score") and "beyond normal variation" in res.summary
    assert b["low_hz"] <= 3100 <= b["high_hz"] and b["beyond_normal"] and b["delta_db"] > b["normal_db"]
    assert f"{b['delta_db']:+.1f} dB against normal" in res.summary and f"±{b['normal_db']:.1f} dB" in res.summary


def test_a_reference_without_the_spread_still_explains_and_round_trips():
    from humwatch.data.clips import Clip
    from humwatch.explain.alarm import NormalReference, explain_alarm

    rng = np.random.default_rng(1)
    ref = NormalReference.from_signals((_normal(rng) for _ in range(5)), SR)
    back = NormalReference.from_arrays(ref.arrays(), 5)
    assert np.array_equal(back.clip_spread, ref.clip_spread)
    old = NormalReference.from_arrays({k: v for k, v in ref.arrays().items() if k != "clip_spread"}, 5)  # a monitor fitted before
    assert old.clip_spread is None
    res = explain_alarm(_Monitor(old, 0.5), Clip.from_array(_normal(rng), SR, "n.wav", "fan", "00", 0))
    assert "most different:" in res.summary and "normal clips vary" not in res.summary
    assert NormalReference.from_signals([_normal(rng)], SR).clip_spread is None  # one window: no spread to tell
