"""The report page: self-contained HTML (no network), every figure it names exists, the run's
tables are in it; `explain_run` and `humwatch explain` on a tiny fake run with tiny random-init models."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from humwatch.data.clips import Clip, write_clips_csv
from humwatch.errors import ConfigError
from humwatch.explain.report import Figure, Section, markdown_to_html, write_report

TINY_AST = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_length=128)
TINY_CNN = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], cardinality=4, base_width=32, stem_width=8)
TINY = {"ast": TINY_AST, "resnext101_32x8d": TINY_CNN}
SECONDS = 1.5


def make_run(root: Path, types=("fan", "pump"), ids=("00", "02"), n_normal=3, n_anomalous=2) -> tuple[Path, list[Clip]]:
    """A run directory as `humwatch run` writes it, over a few short generated WAV clips."""
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(int(SECONDS * sr)) / sr
    clips = []
    for ti, m in enumerate(types):
        for i in ids:
            for label, n in ((0, n_normal), (1, n_anomalous)):
                d = root / "data" / f"6dB_{m}" / m / f"id_{i}" / ("abnormal" if label else "normal")
                d.mkdir(parents=True, exist_ok=True)
                for k in range(n):
                    y = 0.3 * np.sin(2 * np.pi * (300 + 200 * ti) * t) + 0.02 * rng.standard_normal(t.size)
                    if label:
                        y[::400] += 0.5
                    p = d / f"{k:08d}.wav"
                    sf.write(str(p), y.astype(np.float32), sr, subtype="PCM_16")
                    clips.append(Clip(str(p), m, f"id_{i}", label, "6dB", "test" if (label or k == 0) else "train"))
    run = root / "run"
    run.mkdir()
    write_clips_csv(clips, run / "split.csv")
    rows = [{"machine_type": m, "machine_id": "all", "auc": 0.8125, "pauc": 0.5625, "n_normal": 4, "n_anomalous": 4} for m in types]
    (run / "results.json").write_text(
        json.dumps(
            {
                "method": "embed-detect",
                "label": "ast+lof-vote",
                "random_init": True,
                "weights": "RANDOM INIT (no pretrained weights): seed 0",
                "rows": rows,
            }
        )
    )
    (run / "results.md").write_text(
        "# humwatch run: ast+lof-vote\n\n**RANDOM INIT: no pretrained weights.**\n\n"
        "| machine_type | machine_id | auc | pauc |\n|---|---|---|---|\n"
        + "\n".join(f"| {r['machine_type']} | all | 0.8125 | 0.5625 |" for r in rows)
        + "\n"
    )
    (run / "config.json").write_text(
        json.dumps(
            {"config": {"method": "embed-detect", "backbone": "ast", "weights": "none", "backbone_config": TINY_AST, "channel": None}}
        )
    )
    for bb, dim in (("ast", 16), ("resnext101_32x8d", 24)):
        X = rng.standard_normal((len(clips), dim)).astype(np.float32)
        X[[c.label == 1 for c in clips]] += 3.0
        (run / "embeddings").mkdir(exist_ok=True)
        np.savez(
            run / "embeddings" / f"{bb}.npz",
            X=X,
            path=np.array([c.path for c in clips]),
            label=np.array([c.label for c in clips]),
            machine_type=np.array([c.machine_type for c in clips]),
            machine_id=np.array([c.machine_id for c in clips]),
            split=np.array([c.split for c in clips]),
        )
    return run, clips


def named_files(html: str) -> list[str]:
    """Every file the page names: data-file attributes and non-data src/href values."""
    names = re.findall(r'data-file="([^"]+)"', html)
    names += [v for v in re.findall(r'(?:src|href)="([^"]+)"', html) if not v.startswith("data:")]
    return names


def assert_offline(html: str) -> None:
    assert not re.search(r"https?:", html, re.I), "the page must not reference the network"
    assert "<script" not in html.lower()
    assert not re.search(r"<link\b", html, re.I)


def _png(path: Path) -> Path:
    from humwatch.explain._plot import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    return save_figure(fig, path, dpi=30)


# ----------------------------------------------------------------------------- the page


def test_write_report_embeds_figures_escapes_text_and_stays_offline(tmp_path):
    out = tmp_path / "rep"
    a = _png(out / "a.png")
    b = _png(tmp_path / "elsewhere" / "b.png")  # outside the folder: linked relatively
    sections = [
        Section(
            "Tables",
            text="first <script>alert(1)</script>\n\nsecond paragraph",
            markdown="| method | AUC |\n|---|---|\n| ast | 0.91 |\n| cnn | 0.85 |\n",
        ),
        Section("Figures", figures=[Figure("a.png", "what a shows", "Figure A"), Figure(b, "what b shows")]),
    ]
    path = write_report(out, sections, title="t & t", banner="RANDOM INIT")
    html = path.read_text(encoding="utf-8")
    assert path == out / "report.html"
    assert_offline(html)
    assert "&lt;script&gt;" in html and "<script>" not in html
    assert "<title>t &amp; t</title>" in html and "RANDOM INIT" in html
    assert html.count("<tr>") == 3 and "0.91" in html and "what a shows" in html and "what b shows" in html
    files = named_files(html)
    assert "a.png" in files and "../elsewhere/b.png" in files
    for f in files:
        assert (out / f).is_file(), f
    # the embedded image is the PNG on disk, byte for byte
    data = re.search(r'src="data:image/png;base64,([^"]+)"[^>]*data-file="a.png"', html).group(1)
    assert base64.b64decode(data) == a.read_bytes()
    linked = write_report(out, sections, embed=False, filename="linked.html").read_text()
    assert "data:image" not in linked and 'src="a.png"' in linked
    with pytest.raises(ConfigError, match="not found"):
        write_report(out, [Section("x", figures=[Figure("missing.png", "")])])


def test_markdown_subset():
    html = markdown_to_html("# Title\n\n- one **bold**\n- two `code`\n\n| a | b |\n|:--|--:|\n| x | 1.5 |\n\nplain <b>text</b>")
    assert "<h3>Title</h3>" in html
    assert html.count("<li>") == 2 and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<th>a</th>" in html and '<td class="num">1.5</td>' in html and "<td>x</td>" in html
    assert "&lt;b&gt;text&lt;/b&gt;" in html


# ----------------------------------------------------------------------------- a tiny run, end to end


EXPECTED = {"spectrograms_linear", "spectrograms_mel", "tsne_label", "tsne_machine_id", "attention_distance", "attention_maps"}


def test_explain_run_writes_every_figure_and_a_self_contained_report(tmp_path):
    from humwatch.explain import explain_run

    run, clips = make_run(tmp_path)
    res = explain_run(run, tmp_path / "out", weights="none", configs=TINY, n_distance_clips=2, n_map_clips=2)
    assert set(res.figures) == EXPECTED, res.notes
    assert res.notes == []
    html = res.report.read_text(encoding="utf-8")
    assert_offline(html)
    files = named_files(html)
    assert {Path(f).stem for f in files} == EXPECTED
    for f in files:
        assert (res.out_dir / f).is_file() and (res.out_dir / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "0.8125" in html and "0.5625" in html  # the run's table
    assert "RANDOM INIT" in html and 'class="banner"' in html
    assert html.count("<figcaption>") == len(EXPECTED)

    info = json.loads((res.out_dir / "explain.json").read_text())
    dist = np.array(info["attention_distance"]["pixels"])
    assert dist.shape == (2, 2) and info["attention_distance"]["grid"] == [12, 12]
    assert (dist > 0).all() and len(info["attention_distance"]["clips"]) == 2
    assert {m["name"]: m["random_init"] for m in info["models"]} == {"ast": True, "resnext101_32x8d": True}
    maps = np.load(res.out_dir / "attention_maps.npz")
    assert sorted(maps.files) == sorted(info["attention_maps"]["maps"])
    assert maps["clip0_ast_layer2"].shape == (128, 128)  # the tiny AST's input grid (mel bins x frames)
    assert maps["clip0_cnn_layer4"].shape == (128, 1251)  # the CNN input of a 10 s clip
    for k in maps.files:
        assert 0.0 <= maps[k].min() and maps[k].max() <= 1.0
    # map clips are anomalous clips, one per machine type
    picked = {c.path: c for c in clips}
    assert sorted(picked[p].machine_type for p in info["attention_maps"]["clips"]) == ["fan", "pump"]
    assert all(picked[p].label == 1 for p in info["attention_maps"]["clips"])


def test_missing_audio_and_weights_become_notes_not_failures(tmp_path):
    import shutil

    from humwatch.explain import explain_run

    run, _ = make_run(tmp_path, types=("fan",), ids=("00",))
    shutil.rmtree(tmp_path / "data")
    res = explain_run(run, weights="/no/such/weights")  # out_dir defaults to RUN/explain
    assert res.out_dir == run / "explain"
    assert set(res.figures) == {"tsne_label", "tsne_machine_id"}  # from the saved embeddings alone
    joined = " ".join(res.notes)
    assert "no such file" in joined and "not loaded" in joined
    html = res.report.read_text()
    assert "Notes" in html and all((res.out_dir / f).is_file() for f in named_files(html))


def test_reproduce_directory_report_holds_table3(tmp_path):
    from humwatch.explain import explain_run

    root = tmp_path / "repro"
    (root / "runs").mkdir(parents=True)
    run, _ = make_run(tmp_path)
    shutil_move = __import__("shutil").move
    shutil_move(str(run), str(root / "runs" / "ast-lof__fan"))
    (root / "table3.md").write_text("# Table III\n\n| method | fan | pump |\n|---|---|---|\n| ast-lof | 0.7777 | 0.6666 |\n")
    res = explain_run(root, tmp_path / "out", use_models=False)
    html = res.report.read_text()
    assert "Table III" in html and "0.7777" in html
    assert {"spectrograms_linear", "spectrograms_mel", "tsne_label", "tsne_machine_id"} == set(res.figures)
    assert_offline(html)


# ----------------------------------------------------------------------------- the command


@pytest.fixture
def cli():
    import typer
    from typer.testing import CliRunner

    from humwatch.commands.explain import explain_cmd

    app = typer.Typer()
    app.command("explain")(explain_cmd)
    app.command("other")(lambda: None)  # two commands, so "explain" is a subcommand as in humwatch
    return app, CliRunner()


def test_explain_command_run_and_clips(tmp_path, cli):
    app, runner = cli
    run, clips = make_run(tmp_path, types=("fan",), ids=("00",))
    r = runner.invoke(app, ["explain", "--run", str(run), "--no-models", "--out", str(tmp_path / "o1")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o1" / "report.html").is_file() and "report:" in r.output

    files = [clips[0].path, clips[-1].path]
    r = runner.invoke(
        app,
        [
            "explain",
            "--clips",
            files[0],
            files[1],
            "--out",
            str(tmp_path / "o2"),
            "--tiny",
            "--backbone",
            "resnext101_32x8d",
            "--map-clips",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    html = (tmp_path / "o2" / "report.html").read_text()
    assert "RANDOM INIT" in html and "attention_maps.png" in html and "attention_distance.png" not in html
    assert "anomalous" in html and "normal" in html  # labels read from the folder names
    maps = np.load(tmp_path / "o2" / "attention_maps.npz")
    assert sorted(maps.files) == ["clip0_cnn_layer2", "clip0_cnn_layer4"]

    r = runner.invoke(app, ["explain", "--out", str(tmp_path / "o3")])
    assert isinstance(r.exception, ConfigError)
    r = runner.invoke(app, ["explain", "--run", str(run), files[0]])
    assert isinstance(r.exception, ConfigError)


def test_weights_option_parsing():
    from humwatch.commands.explain import parse_weights

    bbs = ["ast", "resnext101_32x8d"]
    assert parse_weights(None, bbs) is None
    assert parse_weights(["none"], bbs) == "none"
    assert parse_weights(["MIT/ast-finetuned-audioset-10-10-0.4593"], bbs) == "MIT/ast-finetuned-audioset-10-10-0.4593"
    assert parse_weights(["ast=/w/ast"], bbs) == {"ast": "/w/ast"}
    assert parse_weights(["ast=/w/ast", "none"], bbs) == {"ast": "/w/ast", "resnext101_32x8d": "none"}
    with pytest.raises(ConfigError):
        parse_weights(["a", "b"], bbs)
