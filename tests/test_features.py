"""The three frontends against librosa / the Hugging Face extractor, as the study specifies them."""

import sys

import librosa
import numpy as np
import pytest

from humwatch.errors import ConfigError
from humwatch.features import ae_features, ae_logmel, ast_features, cnn_features, context_frames, get_frontend


def test_ae_frontend_shape_and_values_match_librosa(tone_clip):
    x = ae_features(tone_clip)
    assert x.shape == (309, 320) and x.dtype == np.float32
    mel = librosa.feature.melspectrogram(y=tone_clip, sr=16000, n_fft=1024, hop_length=512, n_mels=64, power=2.0)
    ref = 10.0 * np.log10(mel + sys.float_info.epsilon)
    assert ref.shape == (64, 313)
    # row t holds frames t..t+4, frame after frame
    for t in (0, 100, 308):
        np.testing.assert_allclose(x[t], ref[:, t : t + 5].T.reshape(-1), rtol=1e-5, atol=1e-4)


def test_context_frames_order_and_short_input():
    m = np.arange(2 * 6, dtype=np.float32).reshape(2, 6)  # 2 mels, 6 frames
    c = context_frames(m, frames=5)
    assert c.shape == (2, 10)
    np.testing.assert_array_equal(c[1], np.concatenate([m[:, k] for k in range(1, 6)]))
    with pytest.raises(ConfigError):
        context_frames(m[:, :3], frames=5)


def test_cnn_frontend_shape_normalisation_and_librosa(tone_clip):
    x = cnn_features(tone_clip)
    assert x.shape == (3, 128, 1251) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], x[1])
    np.testing.assert_array_equal(x[0], x[2])
    assert abs(float(x[0].mean())) < 1e-4 and abs(float(x[0].std()) - 1) < 1e-3
    db = librosa.power_to_db(librosa.feature.melspectrogram(y=tone_clip, sr=16000, hop_length=128, n_mels=128), ref=1.0)
    np.testing.assert_allclose(x[0], (db - db.mean()) / db.std(), atol=1e-4)


def test_ast_frontend_matches_hf_extractor(tone_clip):
    from transformers import ASTFeatureExtractor

    x = ast_features(tone_clip)
    assert x.shape == (1024, 128)
    ref = ASTFeatureExtractor()(tone_clip, sampling_rate=16000, return_tensors="np")["input_values"][0]
    np.testing.assert_array_equal(x, ref)  # the same numbers, computed without PyTorch
    y64 = tone_clip.astype(np.float64) * 0.5
    np.testing.assert_array_equal(
        ast_features(y64, max_length=512),
        ASTFeatureExtractor(max_length=512)(y64, sampling_rate=16000, return_tensors="np")["input_values"][0],
    )
    # 10 s at a 10 ms shift is 998 frames; the rest is padding, normalised like the extractor pads
    raw = ASTFeatureExtractor(do_normalize=False)(tone_clip, sampling_rate=16000, return_tensors="np")["input_values"][0]
    np.testing.assert_allclose(x, (raw + 4.2677393) / (2 * 4.5689974), atol=1e-4)


def test_frontend_registry_and_keys(tone_clip):
    fe = get_frontend("ae")
    assert fe.batch([tone_clip, tone_clip]).shape == (2, 309, 320)
    assert get_frontend("cnn").key != get_frontend("ast").key
    assert get_frontend("ast", max_length=512)(tone_clip).shape == (512, 128)
    assert get_frontend("ast", max_length=512).key != get_frontend("ast").key
    with pytest.raises(ConfigError, match="unknown frontend"):
        get_frontend("mfcc")


def test_ae_logmel_silence_is_finite():
    x = ae_logmel(np.zeros(16000, dtype=np.float32))
    assert np.isfinite(x).all()
