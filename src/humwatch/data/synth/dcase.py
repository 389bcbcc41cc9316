"""The DCASE 2023/2024 Task 2 development-set layout of the built-in data (``humwatch synth --layout
dcase2023``): domain shift without downloading anything.

::

    OUT/fan/train/section_00_source_train_normal_0000_vel_1260_noise_D.wav
    OUT/fan/train/section_00_target_train_normal_0000_vel_1601_noise_B.wav
    OUT/fan/test/section_00_source_test_normal_0000_vel_1260_noise_D.wav
    OUT/fan/test/section_00_target_test_anomaly_0003_vel_1601_noise_B.wav
    OUT/fan/attributes_00.csv      file_name,d1p,d1v,d2p,d2v (file_name: fan/train/section_00_...wav)
    OUT/ground_truth.csv           path,machine_type,section,domain,split,label,attributes,anomaly_kind,
                                   anomaly_family,severity

As DCASE ships them: single channel, 16 kHz, 10 s; every section (a machine: section_00 is the same
product as MIMII's id_00) has many source-domain training clips and a few target-domain ones (DCASE:
990 and 10; here 50 and 3 by default), and a test set with as many normal as anomalous clips in each
domain. DCASE 2024 names hide the attributes of some machine types (``noAttribute``, see
:data:`~humwatch.data.synth.domains.NO_ATTRIBUTE_2024`). The domains and the extra anomaly kinds are in
:mod:`humwatch.data.synth.domains`.

Randomness: a clip's generator comes from ``(seed, machine type, section, domain, split, label, index)``
only, so its bytes do not depend on the counts or on the other machines; the same arguments give the
same bytes. The DCASE clips are other recordings than the MIMII layout's (the MIMII layout is unchanged).
"""

from __future__ import annotations

import csv
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from humwatch.audio import write_audio
from humwatch.data.clips import Clip
from humwatch.data.synth.common import ANOMALY_KINDS, MACHINES, NOMINAL_DBFS, PEAK_LIMIT, _check_args, _merge_csv, _to_pcm16
from humwatch.data.synth.domains import (
    ANOMALY_FAMILY,
    GENERIC_KINDS,
    NO_ATTRIBUTE_2024,
    add_generic,
    attributes,
    clip_condition,
    condition,
    condition_effect,
    domain_product,
    hall_effect,
)
from humwatch.data.synth.products import _SOURCES, _machine_key, _nominal_power
from humwatch.data.synth.room import _background, _pad, _to_array
from humwatch.data.synth.signals import _power
from humwatch.errors import ConfigError
from humwatch.settings import Int, check_value

YEARS = (2023, 2024)
DOMAINS = ("source", "target")
GROUND_TRUTH_NAME = "ground_truth.csv"
GROUND_TRUTH_FIELDS = (
    "path",
    "machine_type",
    "section",
    "domain",
    "split",
    "label",
    "attributes",
    "anomaly_kind",
    "anomaly_family",
    "severity",
)
MAX_CLIPS = 10**4  # DCASE names have 4-digit indices
DCASE_ANOMALY_KINDS = {m: ANOMALY_KINDS[m] + GENERIC_KINDS[m] for m in MACHINES}
"""Anomaly kinds of the DCASE layouts: the machine's three MIMII kinds and its three generic ones."""

_SALT_DCASE = 0x5EED_0006
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class DcaseClipInfo:
    kind: str  # "normal" or one of DCASE_ANOMALY_KINDS
    severity: float
    attributes: tuple[tuple[str, str], ...]


def synthesize_dcase(
    out_dir,
    year: int = 2023,
    machines: Iterable[str] | str = MACHINES,
    sections: Iterable[str | int] | str = ("00",),
    n_source_train: int = 50,
    n_target_train: int = 3,
    n_test: int = 10,
    snr_db: float = 6.0,
    seed: int = 0,
    seconds: float = 10.0,
    sample_rate: int = 16000,
    progress: bool = True,
) -> list[Clip]:
    """Write a DCASE ``year`` (2023 or 2024) development-set tree under ``out_dir``; return its clips.

    ``sections``: ``"00"``, ``"section_00"`` or ``0`` (0-99), each a different machine;
    ``n_source_train`` / ``n_target_train``: training clips per section and domain; ``n_test``: normal
    clips and as many anomalous ones per section and domain in the test set. Raises
    :class:`~humwatch.errors.ConfigError` for a wrong argument, before writing anything.
    """
    year, machines, secs = _check(year, machines, sections, n_source_train, n_target_train, n_test, snr_db, seed, seconds, sample_rate)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    from humwatch.io import mark_folder

    mark_folder(out, "data")  # humwatch's generated data (what `humwatch synth` may write into again)
    counts = {("train", "source", 0): n_source_train, ("train", "target", 0): n_target_train}
    for d in DOMAINS:
        counts[("test", d, 0)] = counts[("test", d, 1)] = n_test
    jobs = [
        (m, s, split, d, label, k)
        for m in machines
        for s in secs
        for split in _SPLITS
        for d in DOMAINS
        for label in (0, 1)
        for k in range(counts.get((split, d, label), 0))
    ]

    from humwatch.progress import make_progress, progress_enabled

    clips: list[Clip] = []
    truth: dict[str, list] = {}
    attr_rows: dict[tuple[str, int], dict[str, list]] = {}
    bar = make_progress() if progress_enabled(progress) else None
    task = bar.add_task(f"synthesizing DCASE {year} clips", total=len(jobs)) if bar else None
    if bar:
        bar.start()
    try:
        for m, s, split, d, label, k in jobs:
            y, info = render_dcase_clip(m, s, d, split, label, k, seed=seed, snr_db=snr_db, seconds=seconds, sample_rate=sample_rate)
            hidden = year == 2024 and m in NO_ATTRIBUTE_2024
            attr = "noAttribute" if hidden else "_".join(f"{a}_{v}" for a, v in info.attributes)
            name = f"section_{s:02d}_{d}_{split}_{'anomaly' if label else 'normal'}_{k:04d}_{attr}.wav"
            rel = f"{m}/{split}/{name}"
            path = out / rel
            write_audio(path, _to_pcm16(y[:, None])[:, 0], sample_rate)
            clips.append(Clip(str(path.resolve()), m, f"section_{s:02d}", label, split=split, domain=d))
            pairs = [("noAttribute", "")] if hidden else list(info.attributes)
            attr_rows.setdefault((m, s), {})[rel] = [rel] + [x for pair in pairs for x in pair]
            truth[rel] = [
                rel,
                m,
                f"section_{s:02d}",
                d,
                split,
                label,
                attr,
                info.kind,
                ANOMALY_FAMILY.get(info.kind, ""),
                f"{info.severity:.4f}",
            ]
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    for (m, s), rows in attr_rows.items():
        path = out / m / f"attributes_{s:02d}.csv"
        # as wide as the widest row, an earlier run's included (a 2023 and a 2024 run into one folder)
        width = max(max(len(r) for r in rows.values()), _csv_width(path))
        fields = ["file_name"] + [f"d{i}{c}" for i in range(1, (width - 1) // 2 + 1) for c in "pv"]
        rows = {k: r + [""] * (len(fields) - len(r)) for k, r in rows.items()}
        _merge_csv(path, fields, rows, out, key="file_name", pad=True)
    _merge_csv(out / GROUND_TRUTH_NAME, GROUND_TRUTH_FIELDS, truth, out)
    return clips


def render_dcase_clip(
    machine: str,
    section: int,
    domain: str,
    split: str,
    label: int,
    index: int,
    *,
    seed: int = 0,
    snr_db: float = 6.0,
    seconds: float = 10.0,
    sample_rate: int = 16000,
) -> tuple[np.ndarray, DcaseClipInfo]:
    """One DCASE-layout clip as float32 mono samples (what is written before 16-bit rounding).

    Mixing as the MIMII layout: the machine is calibrated on the product's nominal (source-domain)
    normal power and the background is scaled to ``snr_db`` below that, so a target condition that makes
    the machine quieter (a slower drive, a farther microphone) also lowers its SNR, as in a real plant."""
    sr = int(sample_rate)
    n = int(round(seconds * sr))
    ss = np.random.SeedSequence(
        [_SALT_DCASE, int(seed), _machine_key(machine), section, DOMAINS.index(domain), _SPLITS.index(split), label, index]
    )
    rng_src, rng_bg, rng_plan, rng_cond = [np.random.default_rng(s) for s in ss.spawn(4)]
    kind, sev = "normal", 0.0
    if label:
        kinds = DCASE_ANOMALY_KINDS[machine]
        kind = kinds[index % len(kinds)]
        sev = 0.1 + 0.9 * float(rng_plan.uniform()) ** 1.2
    # anomalies: the kinds and the conditions rotate independently (not kind 0 always in condition 0)
    cond = condition(machine, domain, index + index // len(DCASE_ANOMALY_KINDS[machine]) if label else index, section, seed)
    setpoint, cond = cond, clip_condition(cond, rng_cond)  # the attribute names the set point
    prod = domain_product(machine, section, sr, cond)
    own = kind if kind in ANOMALY_KINDS[machine] else "normal"
    x = _SOURCES[machine](prod, rng_src, n + 2 * _pad(sr), sr, own, sev if own != "normal" else 0.0)
    if kind not in ("normal", own):
        x = add_generic(x, kind, sev, prod, rng_plan, sr)
    x = condition_effect(x, machine, cond, sr)
    mach = _to_array(x, n, 1, prod)[0]
    bg = hall_effect(_background(rng_bg, n, sr, 1, prod.hall)[0], cond, sr)
    k_m = 1.0 / math.sqrt(_nominal_power(machine, section, sr, 1))
    k_bg = math.sqrt(10.0 ** ((cond.hall_level_db - snr_db) / 10.0) / _power(bg))
    gain = 10.0 ** (NOMINAL_DBFS[machine] / 20.0) / math.sqrt(1.0 + 10.0 ** (-snr_db / 10.0))
    y = mach * np.float32(gain * k_m) + bg * np.float32(gain * k_bg)
    peak = float(np.max(np.abs(y)))
    if peak > PEAK_LIMIT:
        y *= np.float32(PEAK_LIMIT / peak)
    return y, DcaseClipInfo(kind, sev, attributes(machine, section, sr, setpoint))


def _csv_width(path: Path) -> int:
    """The number of columns of an existing attribute CSV (0 when there is none or it is unreadable)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return len(next(csv.reader(f), []))
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0


_SECTION_RE = re.compile(r"^(?:section_)?(\d{1,2})$")


def _check(year, machines, sections, n_source_train, n_target_train, n_test, snr_db, seed, seconds, sample_rate):
    if isinstance(year, str) and year.strip().isdigit():
        year = int(year)
    if isinstance(year, bool) or year not in YEARS:
        raise ConfigError(f"DCASE year must be 2023 or 2024, got {year!r}")
    machines, _ = _check_args(machines, ("00",), 1, 0, snr_db, seed, seconds, sample_rate, 1)
    if isinstance(sections, (str, int)):
        sections = (sections,)
    try:
        sections = tuple(sections)
    except TypeError:
        raise ConfigError(f"sections: expected a list of sections like '00', got {sections!r}") from None
    if not sections:
        raise ConfigError("sections: empty (give sections like 00, 01)")
    secs = []
    for v in sections:
        m = _SECTION_RE.match(v.strip()) if isinstance(v, str) else None
        if isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 99:
            secs.append(int(v))
        elif m:
            secs.append(int(m.group(1)))
        else:
            raise ConfigError(f"bad section {v!r} (use e.g. '00' or 'section_00', 0-99)")
    if len(set(secs)) != len(secs):
        raise ConfigError(f"sections: a section is listed twice in {', '.join(map(str, sections))}")
    for name, v in (("source training clips", n_source_train), ("target training clips", n_target_train), ("test clips", n_test)):
        check_value(v, Int(0, MAX_CLIPS - 1), name)
    if n_source_train + n_target_train + n_test == 0:
        raise ConfigError("no training and no test clips: nothing to generate")
    return year, machines, secs
