"""Dataset layout parsers (MIMII, DCASE Task 2, plain folders, CSV) and load_dataset's detection,
filters and errors. Trees are generated in tmp_path: zero-byte files where only names matter."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from humwatch.audio import AudioSettings, load_audio
from humwatch.data import Clip, detect_layout, load_dataset, write_clips_csv
from humwatch.data.dcase import load_dcase, parse_name
from humwatch.data.folder import load_folder
from humwatch.data.mimii import load_mimii
from humwatch.errors import ConfigError, DatasetError

# Real MIMII 6 dB per-id counts (normal, abnormal); their sums are the study's Table II.
MIMII_COUNTS = {
    "fan": {"id_00": (1011, 407), "id_02": (1016, 359), "id_04": (1033, 348), "id_06": (1015, 361)},
    "pump": {"id_00": (1006, 143), "id_02": (1005, 111), "id_04": (702, 100), "id_06": (1036, 102)},
    "slider": {"id_00": (1068, 356), "id_02": (1068, 267), "id_04": (534, 178), "id_06": (534, 89)},
    "valve": {"id_00": (991, 119), "id_02": (708, 120), "id_04": (1000, 120), "id_06": (992, 120)},
}
TABLE_II = {"fan": (4075, 1475), "valve": (3691, 479), "pump": (3749, 456), "slider": (3204, 890)}


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def make_mimii(root: Path, counts: dict, snr: str = "6dB") -> Path:
    for machine, per_id in counts.items():
        for mid, (n_norm, n_anom) in per_id.items():
            for label, n in (("normal", n_norm), ("abnormal", n_anom)):
                d = root / f"{snr}_{machine}" / machine / mid / label
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    (d / f"{i:08d}.wav").touch()
    return root


def tally(clips) -> dict[str, tuple[int, int]]:
    c = Counter((x.machine_type, x.label) for x in clips)
    return {m: (c[(m, 0)], c[(m, 1)]) for m in sorted({x.machine_type for x in clips})}


def one_line_error(excinfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"
    return msg


@pytest.fixture(scope="module")
def mimii_root(tmp_path_factory) -> Path:
    return make_mimii(tmp_path_factory.mktemp("mimii"), MIMII_COUNTS)


# --- MIMII ---------------------------------------------------------------------------------------


def test_mimii_table_ii_counts_fast_and_without_reading_audio(mimii_root):
    t0 = time.perf_counter()
    clips = load_dataset(mimii_root)  # every file is 0 bytes: reading any as audio would fail
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0, f"parsing {len(clips)} paths took {elapsed:.1f} s"
    assert tally(clips) == TABLE_II
    assert len(clips) == sum(a + b for a, b in TABLE_II.values()) == 18_019
    fan00 = [c for c in clips if c.group == "fan_id_00"]
    assert (sum(not c.label for c in fan00), sum(c.label for c in fan00)) == (1011, 407)
    per_id = Counter((c.machine_type, c.machine_id, c.label) for c in clips)
    for m, ids in MIMII_COUNTS.items():
        for mid, (nn, na) in ids.items():
            assert (per_id[(m, mid, 0)], per_id[(m, mid, 1)]) == (nn, na)
    assert [c.path for c in clips] == sorted(c.path for c in clips)
    assert all(Path(c.path).is_absolute() and c.snr == "6dB" and c.split == "" for c in clips)
    first = clips[0]
    assert first.path.endswith("6dB_fan/fan/id_00/abnormal/00000000.wav")
    assert first == Clip(first.path, "fan", "id_00", 1, snr="6dB")


@pytest.mark.parametrize(
    "sub, expected",
    [
        ("6dB_fan", {"fan": TABLE_II["fan"]}),
        ("6dB_fan/fan", {"fan": TABLE_II["fan"]}),
        ("6dB_fan/fan/id_00", {"fan": (1011, 407)}),
        ("6dB_valve/valve/id_02", {"valve": (708, 120)}),
    ],
)
def test_mimii_root_may_be_one_snr_machine_or_id_folder(mimii_root, sub, expected):
    root = mimii_root / sub
    assert detect_layout(root) == "mimii"
    clips = load_dataset(root)
    assert tally(clips) == expected
    assert {c.snr for c in clips} == {"6dB"}
    if sub.endswith("id_00"):
        assert {c.machine_id for c in clips} == {"id_00"}


def test_mimii_filters(mimii_root):
    clips = load_mimii(mimii_root, machines=["fan", "pump"], ids=["00"])
    assert tally(clips) == {"fan": (1011, 407), "pump": (1006, 143)}
    assert {c.machine_id for c in clips} == {"id_00"}
    # "00", 0 and "id_00" name the same id; a single machine may be a plain string; case-insensitive
    same = load_dataset(mimii_root, machines="FAN", ids="id_00")
    assert [c.path for c in same] == [c.path for c in load_dataset(mimii_root, machines=["fan"], ids=[0])]
    assert tally(same) == {"fan": (1011, 407)}
    two = load_dataset(mimii_root, machines="slider", ids=["04", "id_06"])
    assert tally(two) == {"slider": (534 + 534, 178 + 89)}
    assert tally(load_dataset(mimii_root, machines="valve", snr=6)) == {"valve": TABLE_II["valve"]}


def test_mimii_filter_errors(mimii_root):
    with pytest.raises(DatasetError) as e:
        load_dataset(mimii_root, machines=["fan", "gearbox"])
    one_line_error(e, "gearbox", "fan, pump, slider, valve", str(mimii_root))
    with pytest.raises(DatasetError) as e:
        load_dataset(mimii_root, machines="fan", ids=["00", "01"])
    one_line_error(e, "01", "id_00, id_02, id_04, id_06")
    with pytest.raises(DatasetError) as e:
        load_dataset(mimii_root, snr="0dB")
    one_line_error(e, "0dB", "found: 6dB")
    with pytest.raises(ConfigError) as e:
        load_dataset(mimii_root, snr="loud")
    one_line_error(e, "loud")
    with pytest.raises(ConfigError):
        load_dataset(mimii_root, machines=[3.5])


def test_mimii_several_noise_levels(tmp_path):
    counts = {"fan": {"id_00": (3, 2)}}
    for snr in ("6dB", "0dB", "-6dB"):
        make_mimii(tmp_path, counts, snr=snr)
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path)
    one_line_error(e, "fan", "-6dB, 0dB, 6dB", "snr")
    assert {c.snr for c in load_dataset(tmp_path, snr="-6dB")} == {"-6dB"}
    assert len(load_dataset(tmp_path, snr=0)) == 5
    every = load_dataset(tmp_path, snr="all")
    assert Counter(c.snr for c in every) == {"6dB": 5, "0dB": 5, "-6dB": 5}
    # one noise level per machine is no ambiguity
    make_mimii(tmp_path, {"pump": {"id_02": (1, 1)}}, snr="0dB")
    assert tally(load_dataset(tmp_path, machines="pump")) == {"pump": (1, 1)}


def test_mimii_machine_folders_without_snr(tmp_path):
    for m in ("fan", "pump"):
        touch(tmp_path / m / "id_00" / "normal" / "a.wav")
        touch(tmp_path / m / "id_00" / "abnormal" / "b.wav")
    (tmp_path / "fan" / "id_00" / "normal" / "notes.txt").write_text("not audio")
    clips = load_dataset(tmp_path)
    assert detect_layout(tmp_path) == "mimii"
    assert tally(clips) == {"fan": (1, 1), "pump": (1, 1)}
    assert {c.snr for c in clips} == {""}


def test_mimii_id_folder_without_label_folders_is_an_error(tmp_path):
    touch(tmp_path / "6dB_fan" / "fan" / "id_00" / "normal" / "a.wav")
    (tmp_path / "6dB_fan" / "fan" / "id_02").mkdir()
    with pytest.raises(DatasetError) as e:
        load_mimii(tmp_path)
    one_line_error(e, "id_02", "normal/")


def test_mimii_layout_without_wavs_is_an_error(tmp_path):
    (tmp_path / "6dB_fan" / "fan" / "id_00" / "normal").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path)
    one_line_error(e, str(tmp_path), "no .wav")


def test_mimii_clips_load_as_audio(tmp_path):
    """End to end with real (0.1 s, 8-channel) files: parsed paths are readable by load_audio."""
    rng = np.random.default_rng(0)
    for label in ("normal", "abnormal"):
        p = tmp_path / "6dB_pump" / "pump" / "id_04" / label / "00000000.wav"
        p.parent.mkdir(parents=True)
        sf.write(p, (0.1 * rng.standard_normal((1600, 8))).astype(np.float32), 16000, subtype="PCM_16")
    clips = load_dataset(tmp_path, layout="mimii")
    assert [(c.machine_type, c.machine_id, c.label) for c in clips] == [("pump", "id_04", 1), ("pump", "id_04", 0)]
    y = load_audio(clips[0].path, AudioSettings(seconds=0.1))
    assert y.shape == (1600,) and y.dtype == np.float32


# --- DCASE ---------------------------------------------------------------------------------------


def make_dcase2020(root: Path) -> Path:
    for m in ("ToyCar", "fan"):
        for i in range(3):
            touch(root / m / "train" / f"normal_id_01_{i:08d}.wav")
            touch(root / m / "train" / f"normal_id_03_{i:08d}.wav")
        touch(root / m / "test" / "normal_id_01_00000000.wav")
        touch(root / m / "test" / "anomaly_id_01_00000000.wav")
        touch(root / m / "test" / "anomaly_id_03_00000007.wav")
    return root


def make_dcase2023(root: Path) -> Path:
    for m in ("gearbox", "bearing"):
        for s in ("00", "01"):
            touch(root / m / "train" / f"section_{s}_source_train_normal_0000_volt_1.0_wt_30.wav")
            touch(root / m / "train" / f"section_{s}_target_train_normal_0000_noAttribute.wav")
            touch(root / m / "test" / f"section_{s}_source_test_normal_0001_volt_1.0_wt_30.wav")
            touch(root / m / "test" / f"section_{s}_target_test_anomaly_0003_volt_1.5_wt_0.wav")
            touch(root / m / "test" / f"section_{s}_source_test_anomaly_0004.wav")
    return root


def test_dcase2020(tmp_path):
    root = make_dcase2020(tmp_path)
    assert detect_layout(root) == "dcase"
    clips = load_dataset(root)
    assert tally(clips) == {"ToyCar": (7, 2), "fan": (7, 2)}
    assert {c.machine_id for c in clips} == {"id_01", "id_03"}
    assert {c.domain for c in clips} == {""} and {c.split for c in clips} == {""}
    a = [c for c in clips if c.path.endswith("ToyCar/test/anomaly_id_03_00000007.wav")]
    assert a == [Clip(a[0].path, "ToyCar", "id_03", 1)]
    kept = load_dataset(root, keep_split=True)
    assert {(Path(c.path).parent.name, c.split) for c in kept} == {("train", "train"), ("test", "test")}
    assert [c.path for c in clips] == sorted(c.path for c in clips)


def test_dcase2021_to_2024(tmp_path):
    root = make_dcase2023(tmp_path)
    assert detect_layout(root) == "dcase"
    clips = load_dcase(root, keep_split=True)
    assert tally(clips) == {"bearing": (6, 4), "gearbox": (6, 4)}
    assert {c.machine_id for c in clips} == {"section_00", "section_01"}
    by_name = {Path(c.path).relative_to(root).as_posix(): c for c in clips}
    c = by_name["gearbox/test/section_01_target_test_anomaly_0003_volt_1.5_wt_0.wav"]
    assert (c.machine_type, c.machine_id, c.label, c.domain, c.split) == ("gearbox", "section_01", 1, "target", "test")
    c = by_name["bearing/train/section_00_source_train_normal_0000_volt_1.0_wt_30.wav"]
    assert (c.machine_id, c.label, c.domain, c.split) == ("section_00", 0, "source", "train")
    assert Counter(c.domain for c in clips) == {"source": 12, "target": 8}


def test_dcase_filters_and_machine_root(tmp_path):
    root = make_dcase2023(tmp_path)
    only = load_dataset(root, machines="gearbox", ids="01")
    assert tally(only) == {"gearbox": (3, 2)} and {c.machine_id for c in only} == {"section_01"}
    assert [c.path for c in load_dataset(root, machines="gearbox", ids="section_01")] == [c.path for c in only]
    one_machine = load_dataset(root / "bearing")
    assert tally(one_machine) == {"bearing": (6, 4)}
    with pytest.raises(DatasetError) as e:
        load_dataset(root, ids="id_00")  # DCASE 2021+ ids are sections
    one_line_error(e, "id_00", "section_00, section_01")
    with pytest.raises(DatasetError) as e:
        load_dataset(root, machines="ToyCar")
    one_line_error(e, "ToyCar", "bearing, gearbox")
    with pytest.raises(ConfigError) as e:
        load_dataset(root, snr="6dB")
    one_line_error(e, "snr", "dcase")


def test_dcase2021_source_and_target_test_folders(tmp_path):
    touch(tmp_path / "pump" / "train" / "section_00_source_train_normal_0000.wav")
    touch(tmp_path / "pump" / "source_test" / "section_00_source_test_anomaly_0000.wav")
    touch(tmp_path / "pump" / "target_test" / "section_00_target_test_normal_0000.wav")
    clips = load_dataset(tmp_path, keep_split=True)
    assert [(c.split, c.domain, c.label) for c in clips] == [("test", "source", 1), ("test", "target", 0), ("train", "source", 0)]


def test_dcase_unlabelled_eval_files(tmp_path):
    root = make_dcase2023(tmp_path)
    bad = touch(root / "gearbox" / "test" / "section_02_0000.wav")
    with pytest.raises(DatasetError) as e:
        load_dataset(root)
    one_line_error(e, str(bad), "label")
    # the unlabelled section is only an error when it is asked for
    assert len(load_dataset(root, machines="gearbox", ids=["00", "01"])) == 10
    assert parse_name("section_02_0000") == ("section_02", None, "")
    assert parse_name("id_05_00000012") == ("id_05", None, "")


def test_dcase_foreign_file_name_is_an_error(tmp_path):
    root = make_dcase2020(tmp_path)
    bad = touch(root / "fan" / "train" / "recording 1.wav")
    with pytest.raises(DatasetError) as e:
        load_dcase(root)
    one_line_error(e, str(bad), "DCASE")


# --- plain folder ------------------------------------------------------------------------------


def test_folder_normal_and_abnormal(tmp_path):
    root = tmp_path / "compressor"
    touch(root / "normal" / "a.wav")
    touch(root / "normal" / "2024-01" / "b.flac")  # subfolders of normal/ count
    touch(root / "normal" / "readme.txt")  # not audio
    touch(root / "abnormal" / "c.wav")
    assert detect_layout(root) == "folder"
    clips = load_dataset(root)
    assert [(Path(c.path).name, c.machine_type, c.machine_id, c.label) for c in clips] == [
        ("c.wav", "compressor", "id_00", 1),
        ("b.flac", "compressor", "id_00", 0),
        ("a.wav", "compressor", "id_00", 0),
    ]
    named = load_dataset(root, layout="folder", machine_type="pump")
    assert {c.machine_type for c in named} == {"pump"}
    with pytest.raises(DatasetError) as e:
        load_dataset(root, machines="fan")
    one_line_error(e, "fan", "compressor")


@pytest.mark.parametrize("name", ["anomaly", "anomalous", "Abnormal"])
def test_folder_anomaly_folder_names(tmp_path, name):
    touch(tmp_path / "m" / "normal" / "a.wav")
    touch(tmp_path / "m" / name / "b.wav")
    assert tally(load_dataset(tmp_path / "m")) == {"m": (1, 1)}


def test_folder_with_id_subfolders(tmp_path):
    root = tmp_path / "press"
    for mid, n in (("line1", 2), ("line2", 1)):
        for i in range(n):
            touch(root / mid / "normal" / f"{i}.wav")
        touch(root / mid / "anomaly" / "x.wav")
    clips = load_folder(root)
    assert Counter((c.machine_id, c.label) for c in clips) == {("line1", 0): 2, ("line1", 1): 1, ("line2", 0): 1, ("line2", 1): 1}
    assert {c.machine_id for c in load_dataset(root, ids="line2")} == {"line2"}


def test_folder_without_audio_is_an_error(tmp_path):
    (tmp_path / "normal").mkdir()
    (tmp_path / "abnormal").mkdir()
    (tmp_path / "normal" / "x.txt").write_text("x")
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path)
    one_line_error(e, str(tmp_path), "no audio")


# --- CSV manifests ---------------------------------------------------------------------------


def test_csv_manifest(tmp_path):
    clips = [
        Clip(str(tmp_path / "b.wav"), "fan", "id_00", 1, snr="6dB", split="test"),
        Clip(str(tmp_path / "a.wav"), "fan", "id_00", 0, snr="6dB", split="train"),
        Clip(str(tmp_path / "c.wav"), "pump", "id_02", 0, snr="0dB", split="val"),
    ]
    write_clips_csv(clips, tmp_path / "clips.csv")
    assert detect_layout(tmp_path / "clips.csv") == "csv"
    loaded = load_dataset(tmp_path / "clips.csv")
    assert [Path(c.path).name for c in loaded] == ["a.wav", "b.wav", "c.wav"]
    assert {c.split for c in loaded} == {""}  # splits are kept only when asked
    kept = load_dataset(tmp_path / "clips.csv", layout="csv", keep_split=True)
    assert sorted(kept, key=lambda c: c.path) == sorted(clips, key=lambda c: c.path)
    assert [c.machine_type for c in load_dataset(tmp_path / "clips.csv", machines="pump", ids="02")] == ["pump"]
    assert [Path(c.path).name for c in load_dataset(tmp_path / "clips.csv", snr="6dB")] == ["a.wav", "b.wav"]
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path / "clips.csv", machines="valve")
    one_line_error(e, "valve", "fan, pump")
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path, layout="csv")
    one_line_error(e, str(tmp_path), "csv")


# --- detection and errors ----------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path / "nope")
    one_line_error(e, str(tmp_path / "nope"), "no such folder")


def test_empty_root(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path)
    one_line_error(e, str(tmp_path), "empty folder")


def test_unknown_structure_lists_known_layouts(tmp_path):
    touch(tmp_path / "some" / "thing.wav")
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path)
    one_line_error(e, str(tmp_path), "MIMII", "DCASE", "normal/", ".csv")


@pytest.mark.parametrize("layout", ["auto", "mimii", "dcase", "folder"])
def test_file_where_folder_expected(tmp_path, layout):
    f = tmp_path / "data.wav"
    f.write_bytes(b"RIFF")
    with pytest.raises(DatasetError) as e:
        load_dataset(f, layout=layout)
    one_line_error(e, str(f), "is a file")


@pytest.mark.parametrize("layout", ["mimii", "dcase", "folder"])
def test_forced_layout_that_does_not_fit(tmp_path, layout):
    touch(tmp_path / "some" / "thing.wav")
    with pytest.raises(DatasetError) as e:
        load_dataset(tmp_path, layout=layout)
    one_line_error(e, str(tmp_path))


def test_unknown_layout_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_dataset(tmp_path, layout="mimi")
    one_line_error(e, "mimi", "auto, mimii, dcase, folder, recordings, csv")


def test_layout_name_case_and_forced_layout(mimii_root):
    clips = load_dataset(mimii_root / "6dB_pump", layout="MIMII", ids="06")
    assert tally(clips) == {"pump": (1036, 102)}


@pytest.mark.parametrize(
    "value, expected",
    [
        (6, "6dB"),
        ("6", "6dB"),
        ("6dB", "6dB"),
        ("6_dB", "6dB"),
        ("+6 dB", "6dB"),
        (-6, "-6dB"),
        ("-6dB", "-6dB"),
        (6.0, "6dB"),
        ("0dB", "0dB"),
        ("-0", "0dB"),
        ("2.5dB", "2.5dB"),
    ],
)
def test_snr_spellings(value, expected):
    from humwatch.data.common import normalize_snr

    assert normalize_snr(value) == expected


def test_mimii_snr_folder_spellings(tmp_path):
    touch(tmp_path / "6_dB_fan" / "fan" / "id_00" / "normal" / "a.wav")  # as the download's zip is named
    touch(tmp_path / "-6.0dB_pump" / "pump" / "id_00" / "normal" / "a.wav")
    clips = load_dataset(tmp_path)
    assert [(c.machine_type, c.snr) for c in clips] == [("pump", "-6dB"), ("fan", "6dB")]
    assert [c.machine_type for c in load_dataset(tmp_path, snr="-6")] == ["pump"]


def test_a_folder_of_recordings_is_normal_except_abnormal(tmp_path):
    import soundfile as sf

    root = tmp_path / "pump_07"
    for rel in ("a.wav", "day2/b.flac", "abnormal/c.wav", "normal/d.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), np.zeros(160, np.float32) + 0.1, 16000)
    clips = load_dataset(root)
    assert {Path(c.path).name: c.label for c in clips} == {"a.wav": 0, "b.flac": 0, "c.wav": 1, "d.wav": 0}
    assert {c.machine_type for c in clips} == {"pump_07"}
    assert load_dataset(root, layout="recordings") == clips
