"""The MIMII autoencoder baseline: architecture, training, scoring."""

import numpy as np
import pytest
import torch

from humwatch.errors import ConfigError
from humwatch.models.autoencoder import Autoencoder, AutoencoderDetector


def test_architecture_is_the_mimii_baseline():
    m = Autoencoder(320)
    linears = [layer for layer in m.net if isinstance(layer, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(320, 64), (64, 64), (64, 8), (8, 64), (64, 64), (64, 320)]
    relus = [layer for layer in m.net if isinstance(layer, torch.nn.ReLU)]
    assert len(relus) == 5 and isinstance(m.net[-1], torch.nn.Linear)  # linear output
    assert m.encode(torch.zeros(3, 320)).shape == (3, 8)


def _clips(rng, n, anomalous=False):
    """Clips of 309 context vectors living near a 4-d subspace; anomalies leave it."""
    basis = np.random.default_rng(42).standard_normal((4, 320))
    out = []
    for _ in range(n):
        x = rng.standard_normal((309, 4)) @ basis + 0.05 * rng.standard_normal((309, 320))
        if anomalous:
            x += 0.8 * rng.standard_normal((309, 320))
        out.append(x.astype(np.float32))
    return out


def test_training_lowers_loss_and_separates_anomalies():
    rng = np.random.default_rng(0)
    det = AutoencoderDetector(epochs=15, batch_size=256, seed=0).fit(_clips(rng, 12), progress=False)
    assert det.loss_history_[-1] < 0.5 * det.loss_history_[0]
    normal = det.score_clips(_clips(rng, 6))
    anomalous = det.score_clips(_clips(rng, 6, anomalous=True))
    assert normal.max() < anomalous.min()


def test_score_is_mean_reconstruction_error():
    rng = np.random.default_rng(1)
    clips = _clips(rng, 2)
    det = AutoencoderDetector(epochs=1, seed=3).fit(clips, progress=False)
    with torch.no_grad():
        x = torch.from_numpy(clips[0])
        expected = float(((det.model_(x) - x) ** 2).mean())
    assert det.score_clips(clips[:1])[0] == pytest.approx(expected, rel=1e-6)


def test_same_seed_same_model():
    clips = _clips(np.random.default_rng(2), 3)
    a = AutoencoderDetector(epochs=2, seed=5).fit(clips, progress=False).score_clips(clips)
    b = AutoencoderDetector(epochs=2, seed=5).fit(clips, progress=False).score_clips(clips)
    np.testing.assert_array_equal(a, b)


def test_bad_settings_and_inputs():
    with pytest.raises(ConfigError):
        AutoencoderDetector(epochs=0)
    with pytest.raises(ConfigError):
        AutoencoderDetector(lr=-1)
    with pytest.raises(ConfigError, match="at least one"):
        AutoencoderDetector(epochs=1).fit([], progress=False)
    det = AutoencoderDetector(epochs=1).fit([np.zeros((309, 320), np.float32) + 0.1], progress=False)
    with pytest.raises(ConfigError, match="do not fit"):
        det.score_clips([np.zeros((309, 64), np.float32)])
    with pytest.raises(ConfigError, match="not fitted"):
        AutoencoderDetector().score_clips([np.zeros((309, 320), np.float32)])


def test_autoencoder_backbone_registry_and_saved_run_models(tmp_path):
    from humwatch.models import create_backbone, list_backbones
    from humwatch.models.autoencoder import detector_backbone

    assert "autoencoder" in list_backbones()
    rnd = create_backbone("autoencoder", weights="none")
    assert rnd.weights.random_init and rnd.embedding_dim == 8 and rnd.frontend.name == "ae"
    with pytest.raises(ConfigError, match="no pretrained weights"):
        create_backbone("autoencoder")
    clips = _clips(np.random.default_rng(4), 2)
    det = AutoencoderDetector(epochs=2).fit(clips, progress=False)
    bb = detector_backbone(det, "test model")
    bb.save(tmp_path / "ae")
    back = create_backbone("autoencoder", weights=str(tmp_path / "ae"))
    assert not back.weights.random_init
    x = np.stack(clips)
    np.testing.assert_array_equal(bb.embed(x), back.embed(x))
    with torch.no_grad():
        expected = det.model_.encode(torch.from_numpy(clips[0])).mean(0).numpy()
    np.testing.assert_allclose(back.embed(x[:1])[0], expected, rtol=1e-5, atol=1e-6)
    assert [n for n, _ in back.blocks()] == ["encoder", "decoder"]
    with pytest.raises(ConfigError, match="not \\(clips, frames, 320\\)"):
        back.embed(np.zeros((1, 309, 64), np.float32))
