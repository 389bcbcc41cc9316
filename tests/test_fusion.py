"""Score fusion on hand-made scores, method specs, and fusion methods on a tiny tree."""

import numpy as np
import pytest

from humwatch.errors import ConfigError
from humwatch.methods.fusion import fuse_scores
from humwatch.methods.spec import MethodSpec, parse_spec, read_spec_file


def test_rank_fusion_averages_quantiles_among_normal_reference_scores():
    refs = [[1, 2, 3, 4], [10, 20, 30, 40]]
    scores = [[2.5, 0, 5, 100], [35, 45, 5, 45]]
    fused = fuse_scores(scores, refs, "rank")
    # quantiles: member 1 -> 0.5, 0, 1, 1; member 2 -> 0.75, 1, 0, 1
    np.testing.assert_allclose(fused, [0.625, 0.5, 0.5, 1.0], atol=1 / 16 * 0.49 + 1e-12)
    assert fused[3] > fused[0] > fused[1] and fused[3] > fused[2]
    # the two clips at 0.5 are ordered by their mean z-score (0 then 5 for member 1; 45 then 5 for member 2)
    z1 = (np.array([0, 5]) - 2.5) / np.std([1, 2, 3, 4]) + (np.array([45, 5]) - 25) / np.std([10, 20, 30, 40])
    assert (fused[1] > fused[2]) == (z1[0] > z1[1])
    # a tie beyond every reference is broken by z: 100 is far above member 1's normals
    assert fuse_scores([[100, 5], [45, 45]], refs, "rank")[0] > fuse_scores([[100, 5], [45, 45]], refs, "rank")[1]


def test_zscore_fusion_and_fusing_one_member_keeps_its_order():
    refs = [[0.0, 2.0]]
    np.testing.assert_allclose(fuse_scores([[1.0, 3.0]], refs, "zscore"), [0.0, 2.0])
    s = np.random.default_rng(0).normal(size=50)
    for how in ("rank", "zscore"):
        f = fuse_scores([s], [np.random.default_rng(1).normal(size=20)], how)
        assert np.all(np.diff(f[np.argsort(s)]) >= 0)
    with pytest.raises(ConfigError, match="how must be"):
        fuse_scores([s], [s], "median")


def test_method_specs_parse_yaml_values_commas_in_brackets_and_names(tmp_path):
    sp = parse_spec("embed-fusion:backbones=[features, {backbone: ast, weights: none}],detector=knn,standardize=true")
    assert sp.method == "embed-fusion" and sp.settings["backbones"][1] == {"backbone": "ast", "weights": "none"}
    assert sp.settings["standardize"] is True and sp.name == "embed-fusion"
    assert parse_spec("idnet:outlier_exposure=off,epochs=3").settings == {"outlier_exposure": "off", "epochs": 3}
    assert parse_spec("k1=embed-detect:detector=knn").name == "k1"
    assert parse_spec("embed-detect:backbone=features,detector=knn").name == "features-knn"
    assert parse_spec(MethodSpec("idnet", {"epochs": 2}).text()).settings == {"epochs": 2}
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        parse_spec("idnet:epochs")
    f = tmp_path / "m.yaml"
    f.write_text("a: embed-detect:backbone=features\nb: {method: idnet, settings: {epochs: 2}}\n")
    assert [(s.name, s.method) for s in read_spec_file(f)] == [("a", "embed-detect"), ("b", "idnet")]
