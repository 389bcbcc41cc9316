"""The scores of every method stay what they were (tests/regression/pinned_scores.json, written by
tests/regression/pin_scores.py before the methods were restructured)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "regression"))
import pin_scores  # noqa: E402


@pytest.fixture(scope="module")
def computed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("regression")
    return pin_scores.run_all(pin_scores.make_data(tmp / "data"), tmp / "runs", tmp / "cache")


@pytest.mark.parametrize("run", sorted(pin_scores.RUNS))
def test_scores_are_the_pinned_ones(computed, run):
    pinned = json.loads(pin_scores.PINNED.read_text())
    assert pinned["data"] == pin_scores.DATA
    want, got = pinned["scores"][run], computed[run]
    assert sorted(got) == sorted(want), "the test clips changed"
    keys = sorted(want)
    np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys], rtol=1e-5, atol=1e-7)
