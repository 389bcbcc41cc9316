"""The ``hf-audio`` backbone: Hugging Face audio encoders (tiny random configs), layer choice, the four
poolings, RANDOM INIT said out loud, local folders (good, missing, damaged), and the command line."""

import csv
import json

import numpy as np
import pytest

from humwatch.errors import ConfigError, DamagedFileError
from humwatch.models import create_backbone, plan_backbone

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

W2V = {
    "model_type": "wav2vec2",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16, 16],
    "conv_stride": [5, 4],
    "conv_kernel": [10, 8],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
HUBERT = {**W2V, "model_type": "hubert"}
WAVLM = {**W2V, "model_type": "wavlm"}
WHISPER = {
    "model_type": "whisper",
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "max_source_positions": 50,
}  # 1 s input (100 mel frames)
AST = {"model_type": "ast", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "max_length": 128}


def _clips(n=2, seconds=1.0):
    return [(0.1 * np.random.default_rng(i).standard_normal(int(16000 * seconds))).astype(np.float32) for i in range(n)]


def _hidden(bb, x, layer):
    """The layer's hidden states straight from the transformers model (no humwatch pooling)."""
    name = "input_features" if bb.config["model_type"] == "whisper" else "input_values"
    t = torch.from_numpy(x)
    if bb.config["model_type"] == "whisper":
        t = t[:, :-1]
    with torch.no_grad():
        return bb.model(**{name: t}, output_hidden_states=True).hidden_states[layer].numpy()


# -- pooling -------------------------------------------------------------------------------------------
def test_every_pooling_is_what_its_docstring_says_and_ignores_padding():
    from humwatch.models.hf_audio import pool

    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 6, 3)).astype(np.float32)
    w = np.ones((2, 6), np.float32)
    w[1, 4:] = 0  # the second clip's last two frames are padding
    got = {p: pool(torch.from_numpy(h), torch.from_numpy(w), p).numpy() for p in ("mean", "max", "gem", "attentive-stats")}
    for b, n in ((0, 6), (1, 4)):
        f = h[b, :n]
        np.testing.assert_allclose(got["mean"][b], f.mean(0), rtol=1e-5)
        np.testing.assert_allclose(got["max"][b], f.max(0), rtol=1e-5)
        m = (np.sign(f) * np.abs(f) ** 3).mean(0)
        np.testing.assert_allclose(got["gem"][b], np.sign(m) * np.abs(m) ** (1 / 3), rtol=1e-4)
        norms = np.linalg.norm(f, axis=1)
        z = (norms - norms.mean()) / (norms.std() + 1e-6)
        a = np.exp(z) / np.exp(z).sum()
        mu = (a[:, None] * f).sum(0)
        sd = np.sqrt((a[:, None] * f * f).sum(0) - mu * mu)
        np.testing.assert_allclose(got["attentive-stats"][b], np.concatenate([mu, sd]), rtol=1e-4, atol=1e-6)
    assert got["attentive-stats"].shape == (2, 6)
    # what the padding holds does not matter
    h2 = h.copy()
    h2[1, 4:] = 1e3
    for p, v in got.items():
        np.testing.assert_allclose(pool(torch.from_numpy(h2), torch.from_numpy(w), p).numpy(), v, rtol=1e-5)


# -- model types, layers -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "config,pooling",
    [(W2V, "mean"), (HUBERT, "max"), (WAVLM, "gem"), (WHISPER, "attentive-stats"), (AST, "mean")],
    ids=["wav2vec2", "hubert", "wavlm", "whisper", "ast"],
)
def test_each_model_type_embeds_its_chosen_layer_and_says_random_init(config, pooling):
    from humwatch.models.hf_audio import pool

    bb = create_backbone("hf-audio", weights="none", precision="fp32", config={**config, "layer": 1, "pooling": pooling})
    assert bb.weights.random_init and "RANDOM INIT" in bb.describe()
    assert bb.embedding_dim == 32 * (2 if pooling == "attentive-stats" else 1)
    x = bb.frontend.batch(_clips())
    e = bb.embed(x)
    assert e.shape == (2, bb.embedding_dim) and np.isfinite(e).all()
    h = _hidden(bb, x, 1)
    np.testing.assert_allclose(e, pool(torch.from_numpy(h), torch.ones(h.shape[:2]), pooling).numpy(), rtol=1e-4, atol=1e-5)
    last = create_backbone("hf-audio", weights="none", precision="fp32", config={**config, "pooling": pooling})
    assert last.cache_key != bb.cache_key  # the layer is part of what the embeddings are cached under
    assert not np.allclose(last.embed(x), e)


def test_whisper_pools_only_the_frames_that_hold_the_clip():
    bb = create_backbone("hf-audio", weights="none", precision="fp32", config=WHISPER)
    x = bb.frontend.batch(_clips(1, seconds=0.5))  # half of the 1 s input is padding
    assert x.shape == (1, 81, 100) and x[0, -1].sum() == 50  # the mask row: 50 mel frames of clip
    h = _hidden(bb, x, -1)
    assert h.shape[1] == 50
    np.testing.assert_allclose(bb.embed(x)[0], h[0, :25].mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "config,message",
    [
        ({**W2V, "pooling": "median"}, "unknown pooling 'median'"),
        ({**W2V, "layer": 3}, "layer 3 does not exist"),
        ({**W2V, "layer": "last"}, "layer must be an integer"),
        ({k: v for k, v in W2V.items() if k != "model_type"}, "need a model_type"),
        ({**W2V, "hidden_sise": 8}, "no config setting 'hidden_sise'"),
        ({"model_type": "clap"}, "model_type 'clap' is not supported"),
        ({**WHISPER, "max_source_positions": 40}, "multiple of 50"),
    ],
)
def test_bad_settings_are_one_line_errors(config, message):
    with pytest.raises(ConfigError, match=message) as e:
        plan_backbone("hf-audio", weights="none", config=config)
    assert "\n" not in str(e.value)


def test_there_are_no_default_weights():
    with pytest.raises(ConfigError, match="no default weights"):
        plan_backbone("hf-audio", config={"pooling": "mean"})


# -- local folders -------------------------------------------------------------------------------------
def _save_tiny_wav2vec2(folder, seed=1):
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    cfg = AutoConfig.for_model(**W2V)
    torch.manual_seed(seed)
    model = AutoModel.from_config(cfg).eval()
    model.save_pretrained(str(folder))
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(str(folder))
    return model


def test_a_save_pretrained_folder_loads_by_path_without_the_random_init_notice(tmp_path):
    model = _save_tiny_wav2vec2(tmp_path / "w2v")
    bb = create_backbone("hf-audio", weights=str(tmp_path / "w2v"), precision="fp32", config={"layer": 2})
    assert not bb.weights.random_init and "RANDOM INIT" not in bb.describe()
    assert bb.weights.source == f"local:{(tmp_path / 'w2v').resolve()}"
    y = _clips(1)[0]
    e = bb.embed(bb.frontend.batch([y]))
    x = (y - y.mean()) / np.sqrt(y.var() + 1e-7)  # the extractor's per-clip normalisation
    with torch.no_grad():
        h = model(input_values=torch.from_numpy(x[None]), output_hidden_states=True).hidden_states[2]
    np.testing.assert_allclose(e[0], h[0].mean(0).numpy(), rtol=1e-3, atol=1e-4)
    with pytest.raises(ConfigError, match="holds a 'wav2vec2' model, not the config's model_type 'hubert'"):
        plan_backbone("hf-audio", weights=str(tmp_path / "w2v"), config={"model_type": "hubert"})


def test_a_whisper_checkpoint_gives_its_encoder_and_a_saved_backbone_loads_back(tmp_path):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    cfg = WhisperConfig(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=50,
        vocab_size=51865,
    )
    torch.manual_seed(2)
    full = WhisperModel(cfg).eval()
    full.save_pretrained(str(tmp_path / "wh"))  # encoder.* and decoder.* tensors
    WhisperFeatureExtractor(chunk_length=1).save_pretrained(str(tmp_path / "wh"))
    bb = create_backbone("hf-audio", weights=str(tmp_path / "wh"), precision="fp32")
    assert not bb.weights.random_init
    for k, v in full.encoder.state_dict().items():
        assert torch.equal(bb.model.state_dict()[k], v), k
    x = bb.frontend.batch(_clips(2))
    e = bb.embed(x)
    WhisperFeatureExtractor(chunk_length=2).save_pretrained(str(tmp_path / "wh2"))  # 200 frames for a 100-frame encoder
    full.save_pretrained(str(tmp_path / "wh2"))
    with pytest.raises(ConfigError, match="gives 80 mel bins x 200 frames, the whisper model takes 80 x 100"):
        plan_backbone("hf-audio", weights=str(tmp_path / "wh2"))
    bb.save(tmp_path / "saved")  # the encoder alone, its extractor, humwatch_backbone.json, sealed
    again = create_backbone("hf-audio", weights=str(tmp_path / "saved"), precision="fp32")
    np.testing.assert_allclose(again.embed(x), e, rtol=1e-5, atol=1e-6)


def test_a_missing_or_damaged_folder_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no such file or folder"):
        plan_backbone("hf-audio", weights=str(tmp_path / "nowhere/"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        plan_backbone("hf-audio", weights=str(tmp_path / "empty"))
    _save_tiny_wav2vec2(tmp_path / "bad")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not loadable as a wav2vec2 model") as e:
        create_backbone("hf-audio", weights=str(tmp_path / "bad"))
    assert "\n" not in str(e.value)
    (tmp_path / "bad" / "config.json").write_text("{broken")
    with pytest.raises(DamagedFileError) as e:
        plan_backbone("hf-audio", weights=str(tmp_path / "bad"))
    assert "config.json" in str(e.value) and "\n" not in str(e.value)


# -- the command line ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from tests.helpers import make_mimii_tree

    return make_mimii_tree(tmp_path_factory.mktemp("hfa"), machines=("fan",), ids=("00",), n_normal=8, n_anomalous=4, seconds=1.0)


def _cli(*argv, code=0):
    from humwatch.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == code


MODEL = ["--backbone", "hf-audio", "--weights", "none", "--backbone-config", json.dumps({**W2V, "pooling": "gem"})]


def test_embed_run_fit_and_compare_take_an_hf_audio_backbone(tree, tmp_path, capsys):
    from humwatch.embed import EmbeddingSet

    cache = tmp_path / "cache"
    _cli("embed", "--data", tree, "--out", tmp_path / "e.npz", "--cache", cache, "-q", *MODEL)
    out = capsys.readouterr().out
    assert "RANDOM INIT" in out and "12 embeddings of 32 values" in out
    assert EmbeddingSet.load_npz(tmp_path / "e.npz").X.shape == (12, 32)

    _cli(
        "run",
        "--data",
        tree,
        "--out",
        tmp_path / "run",
        "--method",
        "embed-detect",
        "--detector",
        "knn",
        "--detector-params",
        '{"n_neighbors": 2}',
        "--cache",
        cache,
        "-q",
        *MODEL,
    )
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "RANDOM INIT" in json.dumps(res) and (tmp_path / "run" / "scores.csv").is_file()
    assert "RANDOM INIT" in capsys.readouterr().out

    _save_tiny_wav2vec2(tmp_path / "w2v")  # a monitor on pretrained (here: saved) weights
    _cli(
        "fit",
        "--data",
        tree,
        "--out",
        tmp_path / "mon",
        "--detector",
        "knn",
        "--detector-params",
        '{"n_neighbors": 2}',
        "--cache",
        cache,
        "-q",
        "--threshold-method",
        "percentile",
        "--false-alarm-rate",
        "0.5",
        "--backbone",
        "hf-audio",
        "--weights",
        tmp_path / "w2v",
        "--backbone-config",
        '{"pooling": "max", "layer": 1}',
    )
    assert "RANDOM INIT" not in capsys.readouterr().out
    from humwatch.monitor import MonitorError, load_monitor

    _cli("export", tmp_path / "mon", "--format", "onnx", "--out", tmp_path / "exp", code=2)
    err = capsys.readouterr().err
    assert "feature extractor) cannot run in an exported monitor" in err and not (tmp_path / "exp").exists()
    _save_tiny_wav2vec2(tmp_path / "other", seed=5)
    with pytest.raises(MonitorError, match="not the ones it was fitted with"):
        load_monitor(tmp_path / "mon", weights=str(tmp_path / "other"))
    files = sorted((tree / "6dB_fan/fan/id_00/abnormal").glob("*.wav"))[:2]
    from humwatch.cli import main

    with pytest.raises(SystemExit) as e:  # the monitor rebuilds the same backbone from its recipe
        main(["score", str(tmp_path / "mon"), *map(str, files), "--out", str(tmp_path / "s.csv"), "-q"])
    assert e.value.code in (0, 1)
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["file"] for r in rows] == [str(f) for f in files] and all(np.isfinite(float(r["score"])) for r in rows)

    spec = "hfa=embed-detect:backbone=hf-audio,weights=none,detector=knn,detector_params={n_neighbors: 2},backbone_config=" + json.dumps(
        {**AST, "pooling": "attentive-stats"}
    )
    _cli("compare", "--data", tree, "--out", tmp_path / "cmp", "--in-process", "--methods", spec, "--cache", cache, "-q")
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    [m] = doc["methods"]
    assert m["name"] == "hfa" and m["status"] == "ok", m
