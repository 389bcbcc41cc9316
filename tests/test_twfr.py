"""The ``twfr`` backbone (time-weighted frequency representation, TWFR-GMM with the ``gmm``
detector): r = 1 is the band's mean over time, r = 0 its maximum; a 200 ms click that the mean
averages away is found by TWFR + GMM; a wrong r is one line."""

from __future__ import annotations

import numpy as np
import pytest

from humwatch.detectors import create_detector
from humwatch.errors import ConfigError
from humwatch.models import create_backbone

SR = 16000


def test_r_one_is_the_mean_and_r_zero_the_maximum_per_band():
    x = np.random.default_rng(0).normal(size=(3, 128, 500)).astype(np.float32)
    mean = create_backbone("twfr", config={"r": 1.0}).embed(x)
    top = create_backbone("twfr", config={"r": 0.0}).embed(x)
    np.testing.assert_allclose(mean, x.mean(axis=-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(top, x.max(axis=-1), rtol=1e-6)
    mid = create_backbone("twfr").embed(x)
    assert mid.shape == (3, 128) and np.all(mid > mean) and np.all(mid < top)


def _hum(rng, click: bool) -> np.ndarray:
    t = np.arange(10 * SR) / SR
    y = 0.1 * np.sin(2 * np.pi * (200 + rng.normal(0, 2)) * t) + 0.03 * rng.standard_normal(t.size)
    if click:  # a valve that sticks: 200 ms of a 3 kHz burst, once in ten seconds
        s = int(rng.integers(SR, 8 * SR))
        n = int(0.2 * SR)
        y[s : s + n] += 0.05 * np.sin(2 * np.pi * 3000 * t[:n]) * np.hanning(n)
    return y.astype(np.float32)


def _flagged(backbone, detector, rng) -> float:
    embed = lambda ys: backbone.embed(backbone.frontend.batch(ys))  # noqa: E731
    det = detector.fit(embed([_hum(rng, False) for _ in range(24)]))
    thr = np.quantile(det.anomaly_score(embed([_hum(rng, False) for _ in range(40)])), 0.95)
    return float((det.anomaly_score(embed([_hum(rng, True) for _ in range(20)])) > thr).mean())


def test_twfr_gmm_finds_a_short_click_that_the_mean_over_time_averages_away():
    rng = np.random.default_rng(1)
    gmm = lambda: create_detector("gmm", n_components=2)  # noqa: E731
    twfr = _flagged(create_backbone("twfr"), gmm(), rng)
    mean = _flagged(create_backbone("twfr", config={"r": 1.0}), gmm(), rng)
    assert twfr >= 0.9, (twfr, mean)
    assert mean <= 0.5, (twfr, mean)


@pytest.mark.parametrize("bad", [1.5, -0.1, "x"])
def test_a_wrong_r_is_one_line(bad):
    with pytest.raises(ConfigError) as e:
        create_backbone("twfr", config={"r": bad})
    assert "r" in str(e.value) and "\n" not in str(e.value)
