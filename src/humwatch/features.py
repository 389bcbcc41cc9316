"""Log-mel frontends, each exactly as the study feeds its model.

* ``ae``  - the MIMII autoencoder baseline: n_fft 1024, hop 512, 64 mels, power 2, log as
  ``10 * log10(mel + eps)``, then 5 consecutive frames stacked: a 10 s clip gives 313 frames and
  309 context vectors of 64 x 5 = 320 values (shape 309 x 320).
* ``cnn`` - ResNeXt input: hop 128, 128 mels (librosa's other defaults: n_fft 2048, Hann window,
  centred frames), converted to dB (``librosa.power_to_db``, ref 1.0, top_db 80), normalised per
  clip to zero mean and unit variance, copied to 3 channels: 3 x 128 x 1251.
* ``ast`` - what the Hugging Face ``ASTFeatureExtractor`` computes (Kaldi-compatible fbank, 25 ms
  window, 10 ms shift, 128 mels, padded/cut to 1024 frames, AudioSet normalisation with mean
  -4.2677393 and std 4.5689974): 1024 x 128, without PyTorch (:func:`ast_features`).

Two more for humwatch's own models (not the study's):

* ``logmel`` - the weight-free ``features`` backbone's input: log-mel power in dB
  (``10 * log10(mel + 1e-10)``), n_fft 1024, hop 160 (100 frames per second, so amplitude
  modulations up to 50 Hz are seen), 64 mels: 64 x 1001 for a 10 s clip.
* ``wave`` - the signal itself (float32, 160,000 samples for 10 s): for networks that learn their
  own front end (``idnet``: a log-mel branch and a learned waveform branch, computed in torch).

Every frontend is a :class:`Frontend` whose ``key`` changes whenever its output could, so cached
embeddings are keyed by it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

from humwatch.audio import SAMPLE_RATE
from humwatch.errors import ConfigError

AE_PARAMS = dict(n_fft=1024, hop_length=512, n_mels=64, power=2.0, frames=5)
CNN_PARAMS = dict(n_fft=2048, hop_length=128, n_mels=128, top_db=80.0, channels=3)
AST_PARAMS = dict(num_mel_bins=128, max_length=1024, mean=-4.2677393, std=4.5689974)
LOGMEL_PARAMS = dict(n_fft=1024, hop_length=160, n_mels=64)


def ae_logmel(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """64 x T log-mel energies as the MIMII baseline computes them."""
    import librosa

    p = AE_PARAMS
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=p["n_fft"], hop_length=p["hop_length"], n_mels=p["n_mels"], power=p["power"])
    return (20.0 / p["power"] * np.log10(mel + sys.float_info.epsilon)).astype(np.float32)


def context_frames(log_mel: np.ndarray, frames: int = AE_PARAMS["frames"]) -> np.ndarray:
    """Stack ``frames`` consecutive columns: (n_mels, T) -> (T - frames + 1, n_mels * frames).

    Row t holds frames t..t+frames-1, frame after frame (the MIMII baseline's order).
    """
    n_mels, t = log_mel.shape
    n = t - frames + 1
    if n < 1:
        raise ConfigError(f"clip too short: {t} frames, {frames} needed for the context window")
    out = np.empty((n, n_mels * frames), dtype=np.float32)
    for k in range(frames):
        out[:, n_mels * k : n_mels * (k + 1)] = log_mel[:, k : k + n].T
    return out


def ae_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The autoencoder's input: 309 x 320 for a 10 s clip."""
    return context_frames(ae_logmel(y, sr), AE_PARAMS["frames"])


def cnn_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The CNN's input: 3 x 128 x 1251 for a 10 s clip."""
    import librosa

    p = CNN_PARAMS
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=p["n_fft"], hop_length=p["hop_length"], n_mels=p["n_mels"])
    db = librosa.power_to_db(mel, ref=1.0, top_db=p["top_db"])
    x = (db - db.mean()) / (db.std() + 1e-6)
    return np.repeat(x[None].astype(np.float32), p["channels"], axis=0)


def logmel_features(
    y: np.ndarray,
    sr: int = SAMPLE_RATE,
    n_fft: int = LOGMEL_PARAMS["n_fft"],
    hop_length: int = LOGMEL_PARAMS["hop_length"],
    n_mels: int = LOGMEL_PARAMS["n_mels"],
) -> np.ndarray:
    """n_mels x frames log-mel power in dB (the ``features`` backbone's input)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, power=2.0)
    return (10.0 * np.log10(mel + 1e-10)).astype(np.float32)


def wave_features(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The signal as float32 (models that compute their own spectrogram)."""
    return np.ascontiguousarray(y, dtype=np.float32)


@lru_cache(maxsize=1)
def _hf_audio_utils():
    """``transformers.audio_utils`` (numpy only). Imported without PyTorch (an exported monitor on a
    small device), transformers advises that its models are unavailable: humwatch needs none of them.
    Imported once per process (the environment is touched once, not on every clip)."""
    import os

    key = "TRANSFORMERS_NO_ADVISORY_WARNINGS"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        from transformers import audio_utils
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before
    return audio_utils


@lru_cache(maxsize=4)
def _ast_fbank_parts(num_mel_bins: int = AST_PARAMS["num_mel_bins"]):
    """The AST extractor's Kaldi mel bank and window (transformers' ``audio_utils``, numpy only)."""
    import warnings

    hf = _hf_audio_utils()
    mel_filter_bank, window_function = hf.mel_filter_bank, hf.window_function
    with warnings.catch_warnings():  # its mel bank has an empty filter at 128 bins; that is AST's own setting
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        mel = mel_filter_bank(
            num_frequency_bins=257,
            num_mel_filters=num_mel_bins,
            min_frequency=20,
            max_frequency=SAMPLE_RATE // 2,
            sampling_rate=SAMPLE_RATE,
            norm=None,
            mel_scale="kaldi",
            triangularize_in_mel_space=True,
        )
    return mel, window_function(400, "hann", periodic=False)


def ast_features(y: np.ndarray, sr: int = SAMPLE_RATE, max_length: int = AST_PARAMS["max_length"]) -> np.ndarray:
    """The AST's input: 1024 x 128 (frames x mel bins).

    The same numbers as Hugging Face's ``ASTFeatureExtractor`` (AudioSet defaults; a test checks
    they are equal), computed with the numpy functions it calls itself (``transformers.audio_utils``:
    Kaldi-style fbank, 25 ms Hann window, 10 ms shift, pre-emphasis 0.97, DC removal, log), then
    padded with zeros or cut to ``max_length`` frames and normalised with the AudioSet mean and
    twice its std. The extractor class itself is not called because transformers 5 refuses to
    build it without PyTorch, and exported monitors (:mod:`humwatch.onnxrun`) run without PyTorch.
    """
    if sr != SAMPLE_RATE:
        raise ConfigError(f"the AST frontend needs {SAMPLE_RATE} Hz audio, got {sr} Hz")
    spectrogram = _hf_audio_utils().spectrogram
    p = AST_PARAMS
    mel, window = _ast_fbank_parts(p["num_mel_bins"])
    fbank = spectrogram(
        np.squeeze(np.asarray(y, dtype=np.float32)),
        window,
        frame_length=400,
        hop_length=160,
        fft_length=512,
        power=2.0,
        center=False,
        preemphasis=0.97,
        mel_filters=mel,
        log_mel="log",
        mel_floor=1.192092955078125e-07,
        remove_dc_offset=True,
    ).T
    n = fbank.shape[0]
    if n < max_length:
        fbank = np.concatenate([fbank, np.zeros((max_length - n, fbank.shape[1]), dtype=fbank.dtype)])
    fbank = fbank[:max_length]
    return np.asarray((fbank - p["mean"]) / (p["std"] * 2), dtype=np.float32)


@dataclass(frozen=True)
class Frontend:
    """A named function from a mono 16 kHz signal to a model's input array."""

    name: str
    fn: Callable[..., np.ndarray]
    params: dict = field(default_factory=dict)
    description: str = ""

    def __call__(self, y: np.ndarray) -> np.ndarray:
        x = self.fn(y, **self.params)
        if not np.isfinite(x).all():  # finite samples far outside -1..1 overflow the spectrogram
            from humwatch.errors import AudioError

            raise AudioError(f"the {self.name} features are not finite (samples far outside -1..1?)")
        return x

    def batch(self, ys: list[np.ndarray]) -> np.ndarray:
        return np.stack([self(y) for y in ys])

    @property
    def key(self) -> str:
        """A short hash of everything that shapes the output (for caches)."""
        settings = {"name": self.name, "params": self.params, "fixed": _FIXED.get(self.name, {})}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


_FIXED = {"ae": AE_PARAMS, "cnn": CNN_PARAMS, "ast": AST_PARAMS, "logmel": LOGMEL_PARAMS, "wave": {"sample_rate": SAMPLE_RATE}}

FRONTENDS = {
    "ae": Frontend("ae", ae_features, description="log-mel 64 x 5-frame context (MIMII baseline)"),
    "cnn": Frontend("cnn", cnn_features, description="log-mel 128, hop 128, normalised, 3 channels"),
    "ast": Frontend("ast", ast_features, description="HF AST feature extractor (Kaldi fbank 128 x 1024)"),
    "logmel": Frontend("logmel", logmel_features, description="log-mel dB, 64 mels, hop 10 ms (features backbone)"),
    "wave": Frontend("wave", wave_features, description="the signal itself (idnet computes its own spectrogram)"),
}


def get_frontend(name: str, **params) -> Frontend:
    """A frontend by name (``ae``, ``cnn``, ``ast``, ``logmel``, ``wave``); ``params`` override its keyword arguments."""
    if name not in FRONTENDS:
        raise ConfigError(f"unknown frontend {name!r} (choose from {', '.join(FRONTENDS)})")
    base = FRONTENDS[name]
    return base if not params else Frontend(base.name, base.fn, {**base.params, **params}, base.description)
