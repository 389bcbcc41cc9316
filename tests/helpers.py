"""Small generated datasets for tests (no synth dependency: plain tones and bursts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def make_clip(
    rng: np.random.Generator, anomalous: bool, seconds: float = 10.0, sr: int = 16000, channels: int = 2, f0: float = 300.0
) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = 0.2 * np.sin(2 * np.pi * (f0 + rng.normal(0, 3)) * t) + 0.02 * rng.standard_normal(t.size)
    if anomalous:
        for start in rng.integers(0, t.size - 800, size=12):
            y[start : start + 800] += 0.5 * rng.standard_normal(800)
    y = np.clip(y, -0.99, 0.99)
    return np.stack([y] * channels, axis=1).astype(np.float32)


def make_mimii_tree(
    root: Path, machines=("fan", "pump"), ids=("00", "02"), n_normal=8, n_anomalous=4, seed=0, seconds: float = 10.0
) -> Path:
    rng = np.random.default_rng(seed)
    for m_i, m in enumerate(machines):
        for id_ in ids:
            for label, n in (("normal", n_normal), ("abnormal", n_anomalous)):
                d = root / f"6dB_{m}" / m / f"id_{id_}" / label
                d.mkdir(parents=True, exist_ok=True)
                for k in range(n):
                    y = make_clip(rng, label == "abnormal", seconds=seconds, f0=200.0 + 150 * m_i)
                    sf.write(str(d / f"{k:08d}.wav"), y, 16000, subtype="PCM_16")
    return root


def fan_train_test(root: Path, train_anomalous: int = 0):
    """The built-in generator's fan at 6 dB, mono 10 s: 25 normal training clips (and
    ``train_anomalous`` anomalous ones), 12 normal + 12 anomalous test clips; (train, test, root)."""
    from humwatch.data import load_dataset
    from humwatch.data.synth import synthesize

    common = dict(machines=["fan"], ids=["00"], snr_db=6.0, seconds=10.0, channels=1, progress=False)
    synthesize(root / "train", n_normal=25, n_anomalous=train_anomalous, seed=1, **common)
    synthesize(root / "test", n_normal=12, n_anomalous=12, seed=2, **common)
    return load_dataset(root / "train"), load_dataset(root / "test"), root


TINY_AST = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
"""A random-initialised AST small enough for a test (the export and OpenVINO tests)."""
TINY_RX = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "cardinality": 2, "base_width": 32, "stem_width": 8}
"""A random-initialised ResNeXt small enough for a test."""
TINY_IDNET = {
    "epochs": 1,
    "epoch_crops": 32,
    "batch_size": 16,
    "outlier_clips": 1,
    "backbone_config": {"n_mels": 32, "width": 0.25, "embedding_dim": 32, "crop_frames": 16},
}
"""An idnet that trains in seconds."""
