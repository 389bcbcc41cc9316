"""`humwatch reproduce` (humwatch.reproduce): the study config and its checks, the published numbers,
the table writer with failed and resumed cells, --weights-dir, and a tiny synthetic run twice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

import humwatch.reproduce as rp
import humwatch.reproduce.cells as rp_cells
from humwatch.errors import ConfigError, DatasetError
from humwatch.reproduce import (
    COLUMNS,
    PUBLISHED,
    ROWS,
    load_study_config,
    parse_study_config,
    plan_cells,
    reproduce,
    reproduce_synthetic_defaults,
    resolve_weights_dir,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- config


def test_published_table_iii():
    assert tuple(PUBLISHED) == ROWS
    assert all(tuple(PUBLISHED[r]) == COLUMNS for r in ROWS)
    assert PUBLISHED["autoencoder"]["valve_all"] == 0.5757
    assert PUBLISHED["ast-supervised"]["slider_all"] == 1.0
    assert PUBLISHED["cnn-lof"]["fan_00"] == 0.7478
    assert PUBLISHED["ast-lof"]["pump_all"] == 0.8502
    assert PUBLISHED["cnn-supervised"]["valve_all"] == 0.9884


def test_packaged_config_is_the_studys_and_matches_the_repo_copy():
    packaged = rp.default_config_path()
    assert packaged.read_text() == (REPO / "configs" / "study.yaml").read_text()
    c = load_study_config()
    assert (c.seed, c.test_fraction, c.val_fraction) == (0, 0.25, 0.1)
    assert not c.converted  # the packaged file is in the method-spec dialect
    rows = c.rows  # each row a method spec, named by the row
    assert {n: sp.name for n, sp in rows.items()} == {n: n for n in ROWS}
    assert rows["autoencoder"].method == "autoencoder"
    assert rows["autoencoder"].settings == {"epochs": 50, "lr": 1e-3, "batch_size": 512}
    ft = rows["cnn-supervised"].settings
    assert rows["cnn-supervised"].method == "finetune"
    assert (ft["epochs"], ft["lr"], ft["batch_size"], ft["trainable_blocks"], ft["head_hidden"], ft["dropout"]) == (1, 1e-3, 8, 2, 256, 0.1)
    lof = rows["cnn-lof"].settings
    assert rows["cnn-lof"].method == "embed-detect" and lof["detector"] == "lof-vote"
    assert lof["detector_params"] == {"n_neighbors": 4, "contaminations": [0.1, 0.2, 0.3, 0.4]}
    assert (lof["backbone"], lof["weights"]) == ("resnext101_32x8d", "default")
    assert rows["ast-lof"].settings["backbone"] == "ast"
    assert tuple(c.rows) == ROWS and tuple(c.columns) == COLUMNS
    assert c.columns["fan_00"] == {"machine": "fan", "ids": ["00"]}
    assert c.columns["valve_all"] == {"machine": "valve", "ids": None}
    # its YAML form parses back to the same settings
    again = parse_study_config(yaml.safe_load(yaml.safe_dump(c.to_dict())), "round trip")
    assert again.to_dict() == c.to_dict()


def _study() -> dict:
    """The study config in the old dialect (still read, and converted: its checks are these)."""
    return yaml.safe_load((Path(__file__).parent / "study_old_dialect.yaml").read_text())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(epochz=3), r"unknown key\(s\) epochz"),
        (lambda d: d["finetune"].update(momentum=0.9), r"finetune: unknown setting\(s\) momentum"),
        (lambda d: d["finetune"].update(trainable_blocks=-1), r"finetune: trainable_blocks"),
        (lambda d: d["finetune"].update(seed=3), r"finetune.seed is not set here"),
        (lambda d: d["lof"].update(contaminations=[0.1, 0.7]), r"lof.contaminations .*0.7"),
        (lambda d: d["lof"].update(n_neighbors=0), r"lof.n_neighbors"),
        (lambda d: d["split"].update(test=1.5), r"split.test"),
        (lambda d: d["autoencoder"].update(epochs="many"), r"autoencoder.epochs"),
        (lambda d: d.update(precision="fp16"), r"precision must be auto, fp32 or bf16"),
        (lambda d: d["rows"].update(extra={"method": "svm"}), r"rows.extra.method must be one of"),
        (lambda d: d["rows"].update(extra={"method": "lof", "backbone": "vit"}), r"rows.extra.backbone must be one of"),
        (lambda d: d["columns"].update(odd={"machine": "fan", "ids": "00"}), r"columns.odd.ids must be a non-empty list"),
        (lambda d: d["backbones"]["cnn"].update(wieghts="none"), r"backbones.cnn: unknown key\(s\) wieghts"),
        (lambda d: d.pop("rows"), r"missing key\(s\) rows"),
    ],
)
def test_config_errors_are_one_line(tmp_path, change, message):
    d = _study()
    change(d)
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match=message) as e:
        load_study_config(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_yaml_1e_minus_3_is_a_number(tmp_path):
    d = _study()
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(d).replace("lr: 0.001", "lr: 1e-3"))
    assert "lr: 1e-3" in p.read_text()  # PyYAML reads this as the string '1e-3'
    c = load_study_config(p)
    assert c.rows["cnn-supervised"].settings["lr"] == 1e-3 and c.rows["autoencoder"].settings["lr"] == 1e-3


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_study_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\nrows: {")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_study_config(bad)


def test_synthetic_defaults():
    s = reproduce_synthetic_defaults()
    assert s.machines == ("fan", "pump", "valve", "slider") and "00" in s.ids
    assert s.autoencoder_epochs < 50
    assert set(s.backbone_configs) == {"ast", "resnext101_32x8d"}
    small = reproduce_synthetic_defaults(n_normal=10, n_anomalous=4)
    assert (small.n_normal, small.n_anomalous) == (10, 4)
    with pytest.raises(ConfigError, match="unknown setting"):
        reproduce_synthetic_defaults(n_clips=3)
    with pytest.raises(ConfigError, match="n_normal"):
        reproduce_synthetic_defaults(n_normal=0)


# ------------------------------------------------------------------------------- the cells


def test_plan_cells_follows_the_study(tmp_path):
    cells = plan_cells(load_study_config(), tmp_path, tmp_path / "out")
    assert [(c.row, c.column) for c in cells][:6] == [("autoencoder", col) for col in COLUMNS] + [("cnn-supervised", "fan_00")]
    by = {c.key: c for c in cells}
    assert len(cells) == 25
    fan00 = by["ast-lof__fan_00"].run_config
    assert (fan00.machines, fan00.ids, fan00.method, fan00.settings["backbone"]) == (["fan"], ["00"], "embed-detect", "ast")
    assert fan00.settings["detector"] == "lof-vote"
    assert fan00.settings["detector_params"] == {"n_neighbors": 4, "contaminations": [0.1, 0.2, 0.3, 0.4]}
    assert fan00.cache_dir == str(tmp_path / "out" / "cache")
    pump = by["cnn-supervised__pump_all"]
    ps = pump.run_config.settings
    assert (pump.method, ps["backbone"], pump.run_config.ids) == ("finetune", "resnext101_32x8d", None)
    assert (ps["trainable_blocks"], ps["epochs"], ps["block_unit"]) == (2, 1, "bottleneck")  # the study's reading
    ae = by["autoencoder__slider_all"].run_config
    assert (ae.method, ae.settings, ae.per_id) == ("autoencoder", {"epochs": 50, "lr": 1e-3, "batch_size": 512}, False)
    for c in cells:  # every cell's settings pass the method's checks before anything runs
        c.run_config.validate()
    assert fan00.snr == "6dB"  # the study's MIMII noise level
    cfg = load_study_config()
    cfg.snr = "-6dB"  # the noise level goes to every cell's data loading
    assert {c.run_config.snr for c in plan_cells(cfg, tmp_path, tmp_path)} == {"-6dB"}
    only = plan_cells(load_study_config(), tmp_path, tmp_path, machines=["valve"], rows=["ast-lof"])
    assert [c.key for c in only] == ["ast-lof__valve_all"]
    with pytest.raises(ConfigError, match="unknown machine type"):
        plan_cells(load_study_config(), tmp_path, tmp_path, machines=["drill"])
    with pytest.raises(ConfigError, match="unknown row"):
        plan_cells(load_study_config(), tmp_path, tmp_path, rows=["svm"])


def test_weights_dir_names(tmp_path):
    wd = tmp_path / "weights"
    (wd / "ast").mkdir(parents=True)
    (wd / "resnext101_32x8d.safetensors").write_bytes(b"x")
    assert resolve_weights_dir(wd, "ast") == str((wd / "ast").resolve())
    assert resolve_weights_dir(wd, "resnext101_32x8d").endswith("resnext101_32x8d.safetensors")
    cells = {c.key: c for c in plan_cells(load_study_config(), tmp_path, tmp_path, weights_dir=wd)}
    assert cells["ast-lof__fan_all"].run_config.settings["weights"] == str((wd / "ast").resolve())
    assert cells["autoencoder__fan_all"].error is None
    (wd / "ast").rmdir()
    cells = {c.key: c for c in plan_cells(load_study_config(), tmp_path, tmp_path, weights_dir=wd)}
    assert "no weights for ast" in cells["ast-supervised__fan_00"].error
    assert cells["cnn-lof__fan_00"].error is None


class FakeCells:
    """Stands in for run_cell: counts calls, fails the cells in ``fail``."""

    def __init__(self, fail=(), auc=0.9, random_init=False):
        self.calls: list[str] = []
        self.fail = set(fail)
        self.auc = auc
        self.random_init = random_init

    def __call__(self, cell, run_dir, progress=True):
        self.calls.append(cell.key)
        if cell.key in self.fail:
            if cell.row == "cnn-lof":
                raise RuntimeError("boom\nsecond line")
            raise DatasetError(f"{cell.column}: no clips")
        if cell.error:
            raise ConfigError(cell.error)
        votes = {"auc_votes": self.auc - 0.1, "pauc_votes": 0.5} if cell.method == "lof" else {}
        return {
            "auc": self.auc,
            "pauc": 0.8,
            "auc_ci": [self.auc - 0.1, min(1.0, self.auc + 0.05)],
            "n_normal": 10,
            "n_anomalous": 5,
            **votes,
            "weights": "RANDOM INIT (no pretrained weights): seed 0" if self.random_init else "hub:x@y",
            "random_init": self.random_init,
        }


def test_table_failed_cells_and_resume(tmp_path, monkeypatch):
    data = tmp_path / "mimii"
    data.mkdir()
    out = tmp_path / "out"
    fake = FakeCells(fail={"ast-lof__pump_all", "cnn-lof__fan_00"})
    monkeypatch.setattr(rp_cells, "run_cell", fake)
    rows = ["autoencoder", "cnn-lof", "ast-lof"]
    t = reproduce(data, out, rows=rows, machines=["fan", "pump"], progress=False, report=False)
    assert len(fake.calls) == 9 and len(t.cells) == 9
    assert {c["row"] + "__" + c["column"] for c in t.failed} == {"ast-lof__pump_all", "cnn-lof__fan_00"}
    failed = t.cell("ast-lof", "pump_all")
    assert failed["status"] == "failed" and failed["reason"] == "pump_all: no clips" and failed["auc"] is None
    assert t.cell("cnn-lof", "fan_00")["reason"] == "RuntimeError: boom"  # any exception, one line
    for name in ("table3.md", "table3.csv", "table3.json", "study.yaml", "config.json"):
        assert (out / name).is_file()
    assert len(list((out / "cells").glob("*.json"))) == 9
    md = (out / "table3.md").read_text()
    assert "failed" in md and "pump_all: no clips" in md and "2 cell(s) failed" in md
    with open(out / "table3.csv", newline="") as f:
        rows_csv = list(csv.DictReader(f))
    assert [r["status"] for r in rows_csv].count("failed") == 2

    # second run: finished cells are kept, failed ones retried
    fake2 = FakeCells(auc=0.85)
    monkeypatch.setattr(rp_cells, "run_cell", fake2)
    t2 = reproduce(data, out, rows=rows, machines=["fan", "pump"], progress=False, report=False)
    assert sorted(fake2.calls) == ["ast-lof__pump_all", "cnn-lof__fan_00"]
    assert not t2.failed
    assert t2.cell("ast-lof", "pump_all")["auc"] == 0.85
    assert t2.cell("autoencoder", "fan_all")["auc"] == 0.9  # the earlier result, not rerun

    # third run: nothing to do
    fake3 = FakeCells()
    monkeypatch.setattr(rp_cells, "run_cell", fake3)
    reproduce(data, out, rows=rows, machines=["fan", "pump"], progress=False, report=False)
    assert fake3.calls == []

    # a changed setting (the seed) makes every cell stale
    cfg = load_study_config()
    cfg.seed = 1
    reproduce(data, out, cfg, rows=["autoencoder"], machines=["fan"], progress=False, report=False)
    assert fake3.calls == ["autoencoder__fan_00", "autoencoder__fan_all"]


def test_published_comparison_in_every_table(tmp_path, monkeypatch):
    data = tmp_path / "mimii"
    data.mkdir()
    out = tmp_path / "out"
    monkeypatch.setattr(rp_cells, "run_cell", FakeCells(auc=0.9, random_init=True))
    t = reproduce(data, out, rows=["autoencoder", "ast-lof"], machines=["fan"], progress=False, report=False)
    cell = t.cell("autoencoder", "fan_00")
    assert cell["published"] == 0.7770
    assert cell["difference"] == pytest.approx(0.9 - 0.7770)  # ours - published
    lof = t.cell("ast-lof", "fan_all")
    assert lof["difference"] == pytest.approx(0.9 - 0.7696)
    assert (cell["n_normal"], cell["n_anomalous"], cell["seed"]) == (10, 5, 0)
    md = (out / "table3.md").read_text()
    assert "0.9000 / 0.7770 (+0.1230)" in md and "0.9000 / 0.7696 (+0.1304); votes 0.8000" in md
    assert lof["auc_votes"] == pytest.approx(0.8) and cell["auc_votes"] is None  # both LOF readings, each named
    assert "the AUC of the vote count" in md
    assert "0.800-0.950" in md and "**Few clips**" in md  # 5 anomalous test clips: said
    assert "RANDOM INIT" in md  # said loudly for a real-data table
    assert "not comparable" not in md
    doc = json.loads((out / "table3.json").read_text())
    assert doc["seed"] == 0 and doc["synthetic"] is False
    assert set(doc["machine"]) >= {"cpu", "cores"} and doc["versions"]["torch"]
    assert {c["column"] for c in doc["cells"]} == {"fan_00", "fan_all"}
    assert all("seconds" in c for c in doc["cells"])
    with open(out / "table3.csv", newline="") as f:
        first = next(csv.DictReader(f))
    assert (first["row"], first["column"], first["published"]) == ("autoencoder", "fan_00", "0.777000")
    assert float(first["difference"]) == pytest.approx(0.123)


def test_argument_errors(tmp_path):
    data = tmp_path / "data"  # beside the output: an output inside its data is refused before anything else
    data.mkdir()
    with pytest.raises(ConfigError, match="--data is required"):
        reproduce(None, tmp_path / "o", progress=False, report=False)
    with pytest.raises(ConfigError, match="not both"):
        reproduce(data, tmp_path / "o", synthetic=True, progress=False, report=False)
    with pytest.raises(ConfigError, match="no such file"):
        reproduce(tmp_path / "nope", tmp_path / "o", progress=False, report=False)
    with pytest.raises(ConfigError, match="--weights-dir"):
        reproduce(data, tmp_path / "o", weights_dir=tmp_path / "nope", progress=False, report=False)
    with pytest.raises(ConfigError, match="precision"):
        reproduce(data, tmp_path / "o", precision="fp8", progress=False, report=False)
    with pytest.raises(ConfigError, match="an input of this command"):
        reproduce(data, data / "o", progress=False, report=False)


def test_command_exit_status(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from humwatch.commands import reproduce_cmd

    app = typer.Typer()
    app.command("reproduce")(reproduce_cmd)
    app.command("other")(lambda: None)  # two commands: the name is an argument, as in humwatch's app
    data = tmp_path / "mimii"
    data.mkdir()
    monkeypatch.setattr(rp_cells, "run_cell", FakeCells(fail={"autoencoder__fan_00"}))
    args = [
        "reproduce",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        "--rows",
        "autoencoder",
        "--machines",
        "fan",
        "-q",
        "--no-report",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "1 cell(s) failed" in res.output
    monkeypatch.setattr(rp_cells, "run_cell", FakeCells())
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "0.9000" in res.output and "0.7770" in res.output  # ours above the published AUC


# ------------------------------------------------------------------------ synthetic, for real


def test_synthetic_run_is_repeatable(tmp_path):
    """A tiny --synthetic table, twice in separate folders: the same AUCs (to 1e-6)."""
    small = reproduce_synthetic_defaults(machines=("fan",), ids=("00", "02"), n_normal=8, n_anomalous=4, autoencoder_epochs=2)
    rows = ["autoencoder", "ast-supervised", "ast-lof"]
    tables = [reproduce(None, tmp_path / f"run{i}", synthetic=small, rows=rows, progress=False, report=False) for i in (1, 2)]
    a, b = tables
    assert not a.failed, [c["reason"] for c in a.failed]
    assert len(a.cells) == 6
    for ca, cb in zip(a.cells, b.cells):
        assert (ca["row"], ca["column"]) == (cb["row"], cb["column"])
        assert ca["auc"] == pytest.approx(cb["auc"], abs=1e-6)
        assert (ca["n_normal"], ca["n_anomalous"]) == (cb["n_normal"], cb["n_anomalous"])
    assert a.cell("autoencoder", "fan_00")["n_normal"] == 2  # fan id_00 alone: 25 % of its 8 normal clips
    assert a.cell("autoencoder", "fan_all")["n_normal"] == 4
    run = tmp_path / "run1"
    md = (run / "table3.md").read_text()
    assert "not comparable with the published numbers" in md
    assert "RANDOM INIT" in a.cell("ast-lof", "fan_all")["weights"]
    assert 0.0 <= a.cell("ast-lof", "fan_all")["auc_votes"] <= 1.0  # the vote count's reading, beside the LOF score's
    sup = a.cell("ast-supervised", "fan_all")
    assert 0 < sup["trainable_params"] < sup["total_params"]  # every fine-tuning cell says what it trained
    cell_dir = run / "runs" / "ast-supervised__fan_all"
    for name in ("config.json", "split.csv", "scores.csv", "results.json", "results.md"):
        assert (cell_dir / name).is_file(), name
    cfg = json.loads((cell_dir / "config.json").read_text())
    assert cfg["config"]["method"] == "finetune" and cfg["config"]["settings"]["trainable_blocks"] == 2
    assert cfg["versions"]["torch"]
    assert yaml.safe_load((run / "study.yaml").read_text())["rows"]["ast-lof"]["settings"]["weights"] == "none"
    assert any((run / "cache").rglob("*")), "embeddings go through the cache under OUT/cache"
    # a third call on run1 reuses every cell and the generated data, and draws the report
    again = reproduce(None, run, synthetic=small, rows=rows, progress=False, report=True)
    assert all(c.get("reused") for c in again.cells)
    html = (run / "explain" / "report.html").read_text()
    assert "Table III" in html and "RANDOM INIT" in html


def test_synthetic_data_is_reused_or_refused(tmp_path, monkeypatch):
    import humwatch.data.synth as synth

    calls = []

    def fake_synthesize(out, **kw):
        calls.append(kw)
        (Path(out) / "6dB_fan").mkdir(parents=True, exist_ok=True)
        return []

    monkeypatch.setattr(synth, "synthesize", fake_synthesize)
    s = reproduce_synthetic_defaults(n_normal=5, n_anomalous=2)
    (tmp_path / "data" / "6dB_fan").mkdir(parents=True)  # as an interrupted generation leaves it
    assert rp.synthetic_data(tmp_path, s, progress=False) == tmp_path / "data"
    assert len(calls) == 1 and calls[0]["n_normal"] == 5
    rp.synthetic_data(tmp_path, s, progress=False)
    assert len(calls) == 1  # reused
    with pytest.raises(ConfigError, match="other settings"):
        rp.synthetic_data(tmp_path, reproduce_synthetic_defaults(n_normal=6), progress=False)
    other = tmp_path / "elsewhere"
    (other / "data").mkdir(parents=True)
    (other / "data" / "my_recordings.wav").write_bytes(b"")
    with pytest.raises(ConfigError, match="not written by --synthetic"):
        rp.synthetic_data(other, s, progress=False)


def test_weights_dir_cells_for_real(tmp_path):
    """--weights-dir with saved tiny backbones on a small MIMII tree: the cells load them, and a
    random-init origin is still said loudly in the table."""
    from humwatch.data.synth import synthesize
    from humwatch.models import create_backbone

    data = tmp_path / "mimii"
    synthesize(data, machines=["fan"], ids=["00"], n_normal=8, n_anomalous=3, progress=False)
    wd = tmp_path / "weights"
    tiny = reproduce_synthetic_defaults().backbone_configs
    create_backbone("ast", weights="none", config=tiny["ast"]).save(wd / "ast")
    create_backbone("resnext101_32x8d", weights="none", config=tiny["resnext101_32x8d"]).save(wd / "resnext101_32x8d")
    t = reproduce(
        data,
        tmp_path / "out",
        rows=["ast-lof", "cnn-supervised"],
        machines=["fan"],
        weights_dir=wd,
        progress=False,
        threads=1,
        report=False,
    )
    assert not t.failed, [c["reason"] for c in t.failed]
    lof = t.cell("ast-lof", "fan_00")
    assert str(wd / "ast") in lof["weights"] and lof["random_init"] is True
    assert (lof["n_normal"], lof["n_anomalous"]) == (2, 1)
    assert str(wd / "resnext101_32x8d") in t.cell("cnn-supervised", "fan_all")["weights"]
    assert "RANDOM INIT" in (tmp_path / "out" / "table3.md").read_text()
    run_cfg = json.loads((tmp_path / "out" / "runs" / "ast-lof__fan_00" / "config.json").read_text())["config"]
    assert run_cfg["settings"]["weights"] == str((wd / "ast").resolve())


def test_offline_weights_failure_points_to_weights_dir(tmp_path, monkeypatch):
    def offline(cell, run_dir, progress=True):
        raise ConfigError("weights 'MIT/ast': the hub is unreachable; pass a local copy with --weights /path/to/dir")

    monkeypatch.setattr(rp_cells, "run_cell", offline)
    (tmp_path / "d").mkdir()
    t = reproduce(tmp_path / "d", tmp_path / "o", rows=["ast-lof"], machines=["fan"], progress=False, report=False)
    reason = t.cell("ast-lof", "fan_00")["reason"]
    assert reason.startswith("weights 'MIT/ast': the hub is unreachable") and "--weights-dir" in reason
    assert "\n" not in reason
