"""``humwatch synth --layout dcase2023|dcase2024``: a DCASE Task 2 development set with domain shift.

Names, attribute CSVs, the DCASE loader, that target clips differ from source clips, that every anomaly
kind is there and shows, determinism, and that the MIMII layout did not change. Clips are 1-3 s.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from humwatch.cli import main
from humwatch.data import load_dataset
from humwatch.data.dcase import attributes_of
from humwatch.data.synth import DCASE_ANOMALY_KINDS, synthesize, synthesize_dcase
from humwatch.data.synth.dcase import render_dcase_clip
from humwatch.data.synth.domains import ANOMALY_FAMILY
from humwatch.errors import ConfigError

SR = 16000
NAME = re.compile(r"^section_(\d{2})_(source|target)_(train|test)_(normal|anomaly)_(\d{4})_(.+)\.wav$")


def _make(out, **kw):
    args = dict(
        year=2023,
        machines=("fan", "valve"),
        sections=("00", "01"),
        n_source_train=3,
        n_target_train=2,
        n_test=2,
        seconds=1.0,
        progress=False,
    )
    args.update(kw)
    return synthesize_dcase(out, **args)


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _tree_hash(root: Path) -> str:
    """Of the generated files (not humwatch's output marker, .humwatch)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcase2023")
    return root, _make(root)


def test_layout_and_names_are_dcase_2023(tree):
    root, clips = tree
    assert sorted(p.name for p in root.iterdir()) == [".humwatch", "fan", "ground_truth.csv", "valve"]
    for m in ("fan", "valve"):
        assert sorted(p.name for p in (root / m).iterdir()) == ["attributes_00.csv", "attributes_01.csv", "test", "train"]
        counts: dict[tuple, int] = {}
        for split in ("train", "test"):
            for f in (root / m / split).iterdir():
                g = NAME.match(f.name)
                assert g, f.name
                sec, dom, spl, lab, idx, attr = g.groups()
                assert spl == split
                counts[(sec, dom, spl, lab)] = counts.get((sec, dom, spl, lab), 0) + 1
                assert attr != "noAttribute"
        for sec in ("00", "01"):
            assert counts[(sec, "source", "train", "normal")] == 3
            assert counts[(sec, "target", "train", "normal")] == 2
            assert (sec, "source", "train", "anomaly") not in counts
            for dom in ("source", "target"):
                assert counts[(sec, dom, "test", "normal")] == counts[(sec, dom, "test", "anomaly")] == 2
        assert sum(counts.values()) == 2 * (3 + 2 + 8)
    info = sf.info(str(next((root / "fan" / "train").iterdir())))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 1, SR, "PCM_16")
    assert len(clips) == 2 * 2 * 13


def test_attribute_csvs_as_dcase_ships_them(tree):
    root, _ = tree
    for m, params in (("fan", ["vel", "noise"]), ("valve", ["pat", "noise"])):  # seed 0's second factors
        for sec in ("00", "01"):
            rows = _csv(root / m / f"attributes_{sec}.csv")
            with open(root / m / f"attributes_{sec}.csv", encoding="utf-8") as f:
                header = f.readline().strip()
            assert header == "file_name," + ",".join(f"d{i}p,d{i}v" for i in range(1, len(params) + 1))
            files = sorted(f"{m}/{s}/{p.name}" for s in ("train", "test") for p in (root / m / s).glob(f"section_{sec}_*"))
            assert [r["file_name"] for r in rows] == files
            by_domain: dict[str, set] = {"source": set(), "target": set()}
            for r in rows:
                pairs = [(r[f"d{i}p"], r[f"d{i}v"]) for i in range(1, len(params) + 1)]
                assert [p for p, _ in pairs] == params
                assert r["file_name"].endswith("_" + "_".join(f"{p}_{v}" for p, v in pairs) + ".wav")
                by_domain[NAME.match(Path(r["file_name"]).name)[2]].add(tuple(pairs))
            assert len(by_domain["source"]) == 2 and len(by_domain["target"]) == 1
            assert not by_domain["source"] & by_domain["target"]  # the target condition is new


def test_loads_as_a_dcase_development_set_with_domains_and_sections(tree):
    root, written = tree
    clips = load_dataset(root, keep_split=True)
    assert clips == sorted(written, key=lambda c: c.path)
    truth = {r["path"]: r for r in _csv(root / "ground_truth.csv")}
    assert len(truth) == len(clips)
    for c in clips:
        r = truth[str(Path(c.path).relative_to(root))]
        assert (c.machine_type, c.machine_id, c.domain, c.split, c.label) == (
            r["machine_type"],
            r["section"],
            r["domain"],
            r["split"],
            int(r["label"]),
        )
        assert attributes_of(c.path) == r["attributes"]
        assert (r["anomaly_kind"] == "normal") == (c.label == 0)
    assert {c.machine_id for c in clips} == {"section_00", "section_01"}
    assert {c.domain for c in clips} == {"source", "target"}
    assert len(load_dataset(root, machines="valve", ids="01")) == 13


def test_dcase2024_hides_some_attributes(tmp_path):
    _make(tmp_path, year=2024, machines=("fan", "pump", "slider"), sections=("00",), n_source_train=1, n_target_train=1, n_test=1)
    for m in ("pump", "slider"):
        names = [p.name for s in ("train", "test") for p in (tmp_path / m / s).iterdir()]
        assert names and all(n.endswith("_noAttribute.wav") for n in names)
        rows = _csv(tmp_path / m / "attributes_00.csv")
        assert len(rows) == len(names) and all((r["d1p"], r["d1v"]) == ("noAttribute", "") for r in rows)
    assert all(not p.name.endswith("noAttribute.wav") for p in (tmp_path / "fan" / "train").iterdir())
    clips = load_dataset(tmp_path)
    assert {attributes_of(c.path) for c in clips if c.machine_type == "pump"} == {""}
    assert {c.domain for c in clips if c.machine_type == "slider"} == {"source", "target"}


def _logspec(y: np.ndarray) -> np.ndarray:
    fr = y[: len(y) // 1024 * 1024].reshape(-1, 1024) * np.hanning(1024)
    return np.log10((np.abs(np.fft.rfft(fr, axis=1)) ** 2).mean(0) + 1e-12)


def _envelope_acf(y: np.ndarray) -> np.ndarray:
    e = np.sqrt((y[: len(y) // 160 * 160].reshape(-1, 160) ** 2).mean(1))  # 10 ms frames
    e = e - e.mean()
    acf = np.correlate(e, e, "full")[len(e) - 1 :]
    return acf[:200] / acf[0]


@pytest.mark.parametrize("machine", ["fan", "pump", "slider", "valve"])
def test_target_clips_differ_from_source_clips(machine):
    """Source clips of one condition are closer to each other than to the target condition's clips: in
    the spectrum for the machines whose speed changes, in the rhythm for the valve's program."""
    feat = _envelope_acf if machine == "valve" else _logspec
    src = [feat(render_dcase_clip(machine, 0, "source", "train", 0, k, seconds=3.0)[0]) for k in (0, 2, 4)]
    tgt = [feat(render_dcase_clip(machine, 0, "target", "train", 0, k, seconds=3.0)[0]) for k in (0, 1)]
    within = np.mean([np.abs(src[0] - s).mean() for s in src[1:]])
    across = np.mean([np.abs(src[0] - t).mean() for t in tgt])
    assert across > 1.5 * within


def _peakiness(y):
    from scipy.ndimage import median_filter

    s = 10 ** _logspec(y)
    f = np.fft.rfftfreq(1024, 1 / SR)
    return float((s / median_filter(s, 15))[(f > 1100) & (f < 6500)].max())


def _hf_share(y):
    s = 10 ** _logspec(y)
    f = np.fft.rfftfreq(1024, 1 / SR)
    return float(s[(f > 1000) & (f < 6000)].sum() / s.sum())


def _transience(y):
    e = (y[: len(y) // 512 * 512].reshape(-1, 512) ** 2).mean(1)
    return float(e.max() / np.median(e))


@pytest.mark.parametrize(
    "machine,kind,measure,factor",
    [
        ("fan", "whine", _peakiness, 3.0),  # a new spectral line
        ("fan", "rub", _hf_share, 1.0),  # more high-frequency band energy
        ("fan", "knock", _transience, 2.0),  # a frame far louder than the clip's typical frame
        ("pump", "knock", _transience, 2.0),
        ("valve", "stuck", _transience, 1.5),  # more than the valve's own clicks
    ],
)
def test_each_anomaly_family_shows(machine, kind, measure, factor):
    kinds = DCASE_ANOMALY_KINDS[machine]
    normal = [measure(render_dcase_clip(machine, 0, "source", "test", 0, k, seconds=3.0)[0]) for k in range(5)]
    anomalous = []
    for k in range(kinds.index(kind), 30, len(kinds)):
        y, info = render_dcase_clip(machine, 0, "source", "test", 1, k, seconds=3.0)
        assert info.kind == kind
        anomalous.append(measure(y))
    assert np.median(anomalous) > factor * max(normal)


def test_every_anomaly_kind_is_in_the_ground_truth(tmp_path):
    _make(
        tmp_path, machines=("fan", "pump", "slider", "valve"), sections=("00",), n_source_train=0, n_target_train=0, n_test=6, seconds=0.5
    )
    rows = _csv(tmp_path / "ground_truth.csv")
    for m in ("fan", "pump", "slider", "valve"):
        for d in ("source", "target"):
            got = {r["anomaly_kind"] for r in rows if r["machine_type"] == m and r["domain"] == d and r["label"] == "1"}
            assert got == set(DCASE_ANOMALY_KINDS[m])
    families = {r["anomaly_family"] for r in rows if r["label"] == "1"}
    assert families == {"tonal", "broadband", "transient"}
    assert all(r["anomaly_family"] == ANOMALY_FAMILY[r["anomaly_kind"]] for r in rows if r["label"] == "1")
    assert all((r["anomaly_kind"], r["severity"]) == ("normal", "0.0000") for r in rows if r["label"] == "0")
    assert all(0.1 <= float(r["severity"]) <= 1.0 for r in rows if r["label"] == "1")


def test_deterministic_by_seed_and_independent_of_counts(tmp_path):
    a, b, c, d = (tmp_path / x for x in "abcd")
    _make(a, machines=("valve",), sections=("00",), n_source_train=2, n_target_train=1, n_test=1)
    _make(b, machines=("valve",), sections=("00",), n_source_train=2, n_target_train=1, n_test=1)
    _make(c, machines=("valve",), sections=("00",), n_source_train=2, n_target_train=1, n_test=1, seed=1)
    _make(d, machines=("fan", "valve"), sections=("00",), n_source_train=3, n_target_train=2, n_test=2)
    assert _tree_hash(a) == _tree_hash(b)
    fa = {str(p.relative_to(a)): p.read_bytes() for p in a.rglob("*.wav")}
    # another seed draws another target condition, so the attributes in the names may differ too
    clip = lambda rel: (str(Path(rel).parent),) + NAME.match(Path(rel).name).groups()[:5]  # noqa: E731
    fc = {clip(str(p.relative_to(c))): p.read_bytes() for p in c.rglob("*.wav")}
    assert sorted(fc) == sorted(map(clip, fa)) and all(fa[k] != fc[clip(k)] for k in fa)
    assert all((d / k).read_bytes() == v for k, v in fa.items())


def test_mimii_layout_is_unchanged(tmp_path):
    """The MIMII layout writes what it wrote before the DCASE layouts existed: the same files, each WAV
    of the same rate, shape and sample format with the same loudness in each sixteenth of it (to 0.1 %),
    any other file byte for byte (tests/regression/synth_mimii_reference.json, taken then). Not a hash
    of the bytes: the floating-point sums behind the samples differ in their last bit between CPUs
    (an AMD EPYC and an Intel Xeon wrote different bytes), which moves a 16-bit sample by one step."""
    import json

    ref = json.loads((Path(__file__).parent / "regression" / "synth_mimii_reference.json").read_text())
    synthesize(tmp_path, machines=("fan", "valve"), ids=("00", "02"), n_normal=2, n_anomalous=2, seconds=1.0, channels=2, progress=False)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert files == sorted(ref)
    for rel, want in ref.items():
        p = tmp_path / rel
        if "sha256" in want:
            assert hashlib.sha256(p.read_bytes()).hexdigest() == want["sha256"], rel
            continue
        y, sr = sf.read(p, dtype="float64", always_2d=True)
        assert (sr, list(y.shape), sf.info(p).subtype) == (want["sr"], want["shape"], want["subtype"]), rel
        rms = [np.sqrt((s**2).mean(axis=0)) for s in np.array_split(y, 16)]
        np.testing.assert_allclose(rms, want["rms"], rtol=1e-3, err_msg=rel)


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(year=2025), "year must be 2023 or 2024"),
        (dict(sections=("100",)), "bad section '100'"),
        (dict(sections=("00", "section_00")), "listed twice"),
        (dict(n_test=-1), "test clips must be"),
        (dict(machines=("drill",)), "unknown machine type 'drill'"),
        (dict(n_source_train=0, n_target_train=0, n_test=0), "nothing to generate"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path, kw, msg):
    with pytest.raises(ConfigError, match=msg):
        _make(tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_cli_writes_a_dcase_tree_and_refuses_options_of_the_other_layout(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "synth",
                str(tmp_path / "d"),
                "--layout",
                "dcase2024",
                "--machines",
                "valve",
                "--source-train",
                "2",
                "--target-train",
                "1",
                "--test",
                "1",
                "--seconds",
                "0.5",
                "--quiet",
            ]
        )
    assert e.value.code == 0
    assert "wrote 7 clips (5 normal, 2 anomalous)" in capsys.readouterr().out
    assert len(load_dataset(tmp_path / "d")) == 7
    for argv in (["--layout", "dcase2023", "--ids", "00"], ["--sections", "00"]):
        with pytest.raises(SystemExit) as e:
            main(["synth", str(tmp_path / "x"), *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "not an option of --layout" in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_a_second_run_into_the_folder_keeps_the_first_runs_rows(tmp_path):
    """A 2023 run (two attributes) and then a 2024 run (noAttribute, one column pair) into one folder:
    the attribute CSV lists the files of both, none cut short or lost."""
    kw = dict(machines=("pump",), sections=("00",), n_source_train=1, n_target_train=1, n_test=1, seconds=0.5)
    _make(tmp_path, year=2023, **kw)
    _make(tmp_path, year=2024, **kw)
    rows = _csv(tmp_path / "pump" / "attributes_00.csv")
    files = sorted(f"pump/{s}/{p.name}" for s in ("train", "test") for p in (tmp_path / "pump" / s).iterdir())
    assert len(files) == 12 and [r["file_name"] for r in rows] == files
    for r in rows:
        if r["file_name"].endswith("_noAttribute.wav"):
            assert (r["d1p"], r["d1v"], r["d2p"], r["d2v"]) == ("noAttribute", "", "", "")
        else:
            assert (r["d1p"], r["d2p"]) == ("vfd", "load") and r["d1v"] and r["d2v"]  # seed 0: another load
    assert len(_csv(tmp_path / "ground_truth.csv")) == 12
