"""humwatch.audio.load_audio: channels, resampling, padding/cutting, and every kind of bad file.
Files are tiny (0.05-0.2 s) WAVs written with soundfile."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from humwatch.audio import AudioSettings, load_audio, write_audio
from humwatch.errors import AudioError

SR = 16_000
SHORT = AudioSettings(seconds=0.1)  # 1600 samples at 16 kHz


def write(path: Path, y: np.ndarray, sr: int = SR, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), np.asarray(y, dtype=np.float32), sr, subtype=subtype, format="WAV")
    return path


def noise(n: int, channels: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (n,) if channels is None else (n, channels)
    return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@pytest.fixture
def eight_channels(tmp_path):
    data = noise(1600, 8)
    data[:, 3] += 0.2  # make channels clearly different
    return write(tmp_path / "mimii.wav", data), data


# --- channels --------------------------------------------------------------------------------


def test_channels_are_averaged(eight_channels):
    path, data = eight_channels
    notes: list[str] = []
    y = load_audio(path, SHORT, notes=notes)
    assert y.dtype == np.float32 and y.shape == (1600,)
    np.testing.assert_allclose(y, data.mean(axis=1), atol=1e-6)
    assert notes == []


@pytest.mark.parametrize("k", [0, 3, 7])
def test_channel_k_is_picked(eight_channels, k):
    path, data = eight_channels
    y = load_audio(path, AudioSettings(seconds=0.1, channel=k))
    np.testing.assert_array_equal(y, data[:, k])


@pytest.mark.parametrize("k", [8, 12])  # -1 is refused by AudioSettings itself (tests/test_one_way_to_check.py)
def test_channel_out_of_range(eight_channels, k):
    path, _ = eight_channels
    with pytest.raises(AudioError) as e:
        load_audio(path, AudioSettings(seconds=0.1, channel=k))
    msg = str(e.value)
    assert str(path) in msg and "8 channel" in msg and str(k) in msg and "\n" not in msg


def test_mono_file(tmp_path):
    data = noise(1600)
    path = write(tmp_path / "mono.wav", data)
    np.testing.assert_array_equal(load_audio(path, SHORT), data)
    np.testing.assert_array_equal(load_audio(path, AudioSettings(seconds=0.1, channel=0)), data)


def test_pcm16_is_scaled_to_full_scale_one(tmp_path):
    data = noise(1600)
    path = tmp_path / "pcm.wav"
    write_audio(path, data, SR)
    y = load_audio(path, SHORT)
    np.testing.assert_allclose(y, data, atol=1.0 / 32768 + 1e-7)


# --- resampling, padding, cutting ------------------------------------------------------------


@pytest.mark.parametrize("sr", [44_100, 48_000, 8_000])
def test_resampled_to_16k_with_a_note(tmp_path, sr, caplog):
    t = np.arange(int(round(0.1 * sr))) / sr
    path = write(tmp_path / f"tone_{sr}.wav", 0.5 * np.sin(2 * np.pi * 440.0 * t), sr)
    notes: list[str] = []
    with caplog.at_level(logging.INFO, logger="humwatch"):
        y = load_audio(path, AudioSettings(seconds=None), notes=notes)
    assert y.dtype == np.float32 and len(y) == 1600
    assert notes == [f"{path}: resampled from {sr} Hz to 16000 Hz"]
    assert f"resampled from {sr} Hz" in caplog.text
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spectrum) * SR / len(y) - 440.0) <= 10.0  # still a 440 Hz tone
    # with the default 10 s clip length it is also padded, and says so
    notes = []
    y10 = load_audio(path, notes=notes)
    assert len(y10) == 160_000
    assert [n.split(": ", 1)[1].split(" from")[0] for n in notes] == ["resampled", "padded with silence"]


def test_padding_with_a_note(tmp_path):
    data = noise(800)
    path = write(tmp_path / "short.wav", data)
    notes: list[str] = []
    y = load_audio(path, SHORT, notes=notes)
    assert len(y) == 1600
    np.testing.assert_array_equal(y[:800], data)
    assert not y[800:].any()
    assert notes == [f"{path}: padded with silence from 0.05 s to 0.10 s"]


def test_cutting_with_a_note(tmp_path):
    data = noise(3200)
    path = write(tmp_path / "long.wav", data)
    notes: list[str] = []
    y = load_audio(path, SHORT, notes=notes)
    np.testing.assert_array_equal(y, data[:1600])
    assert notes == [f"{path}: cut from 0.20 s to 0.10 s"]


def test_own_length_kept_without_notes(tmp_path):
    data = noise(1234)
    notes: list[str] = []
    y = load_audio(write(tmp_path / "any.wav", data), AudioSettings(seconds=None), notes=notes)
    np.testing.assert_array_equal(y, data)
    assert notes == []


# --- bad files -------------------------------------------------------------------------------


def _valid_pcm(path: Path) -> bytes:
    sf.write(str(path), noise(1600, 8), SR, subtype="PCM_16", format="WAV")
    return path.read_bytes()


def _missing(p: Path) -> Path:
    return p


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _cut_header(p: Path) -> Path:
    p.write_bytes(_valid_pcm(p)[:40])
    return p


def _header_only(p: Path) -> Path:
    sf.write(str(p), np.zeros((0, 1), np.float32), SR, subtype="PCM_16", format="WAV")
    return p


def _text(p: Path) -> Path:
    p.write_text("this is a text file, not audio\n" * 20)
    return p


def _with(value: float):
    def make(p: Path) -> Path:
        y = noise(1600)
        y[100] = value
        return write(p, y)

    return make


def _zeros(p: Path) -> Path:
    return write(p, np.zeros((1600, 8)), subtype="PCM_16")


def _folder(p: Path) -> Path:
    p.mkdir()
    return p


@pytest.mark.parametrize(
    "make, reason",
    [
        (_missing, "no such file"),
        (_empty, "empty file"),
        (_cut_header, "not readable audio"),
        (_header_only, "no samples"),
        (_text, "not readable audio"),
        (_with(np.nan), "NaN or infinite"),
        (_with(np.inf), "NaN or infinite"),
        (_with(-np.inf), "NaN or infinite"),
        (_zeros, "silent"),
        (_folder, "folder"),
    ],
    ids=["missing", "empty", "cut-header", "header-only", "text", "nan", "inf", "-inf", "zeros", "folder"],
)
def test_bad_file(tmp_path, make, reason):
    path = make(tmp_path / "bad clip.wav")
    with pytest.raises(AudioError) as e:
        load_audio(path, SHORT)
    msg = str(e.value)
    assert msg.startswith(str(path)), msg
    assert reason in msg and "\n" not in msg, msg


def test_truncated_wav(tmp_path):
    path = tmp_path / "truncated.wav"
    whole = _valid_pcm(path)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(AudioError) as e:
        load_audio(path, SHORT)
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg and "\n" not in msg
