"""The ``hf-audio`` backbone: a frozen Hugging Face audio encoder, one of its layers, pooled over time.

Audio foundation models used without training them (frozen encoder, pooled frames, kNN) are what
the best anomalous-sound systems since 2024 do. This backbone takes any supported encoder from a
local folder (``save_pretrained`` layout: ``config.json``, ``model.safetensors`` or
``pytorch_model.bin``, ``preprocessor_config.json``), a hub id (when online or in the Hugging Face
cache), or random weights (``weights="none"``, said loudly as RANDOM INIT, for tests):

* the wav2vec2 family (``wav2vec2``, ``wav2vec2-conformer``, ``hubert``, ``wavlm``,
  ``data2vec-audio``, ``unispeech``, ``unispeech-sat``): raw 16 kHz waveform in, ~50 frames/s out;
* ``whisper``: the encoder only (the decoder's weights are never loaded); its input is padded to the
  extractor's chunk (30 s for OpenAI's checkpoints), and only the frames that cover the clip are
  pooled (the padding is masked out);
* ``audio-spectrogram-transformer`` (``ast``): every token (the two class tokens and the patches).

CLAP's audio tower is not supported (its output is a 2-D frequency x time map, not a sequence).

The input is the model's own feature extractor (``preprocessor_config.json``; for random weights,
or a folder without one, the model type's default extractor, sized to the config), applied per
clip by the ``hf-audio`` frontend; audio is resampled from 16 kHz when the extractor wants another
rate.

``config`` (``--backbone-config``) holds humwatch's settings and the model's:

* ``layer``: which hidden state is pooled: ``-1`` (default) the last layer's output, ``0`` the
  embedding (input) layer, ``k`` the output of layer ``k`` (``output_hidden_states``);
* ``pooling`` over time (a frame is one position of the encoder's sequence):

  - ``mean`` (default): the mean of the frames;
  - ``max``: the per-dimension maximum;
  - ``gem``: the generalised mean with p = 3, sign-preserving because hidden states are not
    non-negative: ``sign(m) * |m|^(1/3)`` with ``m = mean(sign(x) * |x|^3)``; between the mean and the
    maximum magnitude, so loud short events count more than in the mean;
  - ``attentive-stats``: attentive statistics pooling (Okabe et al., 2018) without training: the
    attention over frames is the softmax of each frame's L2 norm, standardised over the clip's
    frames (so frames that stand out from the clip weigh more, with no learned or arbitrary
    temperature); the output is the attention-weighted mean and standard deviation, concatenated
    (twice the hidden size);

* ``model_type`` (required with ``weights="none"``; checked against a folder's when given) and any
  setting of that model type's transformers config (``hidden_size``, ``num_hidden_layers`` ...),
  e.g. a tiny random model: ``{"model_type": "wav2vec2", "hidden_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 2, "intermediate_size": 64}``.

The embedding has ``hidden_size`` values (twice that with ``attentive-stats``). There is no default
checkpoint: ``weights="default"`` is refused with a line saying what to pass.

Example::

    >>> from humwatch.models import create_backbone
    >>> bb = create_backbone("hf-audio", weights="/models/wavlm-base-plus", config={"layer": 6, "pooling": "gem"})
    >>> bb.embed(bb.frontend.batch([y])).shape
    (1, 768)
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from humwatch.audio import SAMPLE_RATE
from humwatch.errors import ConfigError, one_line
from humwatch.features import Frontend
from humwatch.models.lazy import LazyBackbone
from humwatch.models.registry import Backbone, quiet_hf_loading, random_init_context, register_backbone
from humwatch.models.weights import WeightsInfo, check_meta_backbone, find_weight_file, load_state_dict, read_meta, resolve_weights

log = logging.getLogger("humwatch")

NAME = "hf-audio"
POOLINGS = ("mean", "max", "gem", "attentive-stats")
GEM_P = 3.0
WAVE_TYPES = ("wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat")
AST_TYPE = "audio-spectrogram-transformer"
MODEL_TYPES = (*WAVE_TYPES, "whisper", AST_TYPE)
ALIASES = {"ast": AST_TYPE}
OWN = ("model_type", "layer", "pooling")
"""Keys of ``config`` that are humwatch's; every other key is a transformers config setting."""
WHISPER_HOP = 160
"""Samples per mel frame of Whisper's extractor; its encoder halves the frame rate (conv stride 2)."""


# -- the frontend: the model's own feature extractor -------------------------------------------------
@lru_cache(maxsize=8)
def _extractor(doc: str):
    import transformers

    d = json.loads(doc)
    cls = getattr(transformers, d.get("feature_extractor_type", ""), None)
    if cls is None:
        raise ConfigError(f"{NAME}: unknown feature extractor {d.get('feature_extractor_type')!r}")
    with quiet_hf_loading(), _quiet_mel_bank():
        return cls.from_dict(d)


@contextmanager
def _quiet_mel_bank():
    """AST's own 128-bin Kaldi bank has an empty filter, and transformers warns of it on every build."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        yield


def hf_audio_features(y: np.ndarray, sr: int = SAMPLE_RATE, extractor: dict | None = None, mask: bool = False) -> np.ndarray:
    """One clip through the model's feature extractor (``extractor``: its ``to_dict``), resampled to
    its rate first; ``mask``: append the extractor's attention mask as one more row (Whisper: which
    padded frames hold the clip), so the backbone pools only those."""
    fe = _extractor(json.dumps(extractor, sort_keys=True))
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    rate = int(getattr(fe, "sampling_rate", sr) or sr)
    if rate != sr:
        import librosa

        y = librosa.resample(y, orig_sr=sr, target_sr=rate).astype(np.float32)
    out = fe(y, sampling_rate=rate, return_tensors="np", **({"return_attention_mask": True} if mask else {}))
    x = np.asarray(out[fe.model_input_names[0]][0], dtype=np.float32)
    if mask:
        x = np.concatenate([x, np.asarray(out["attention_mask"], dtype=np.float32).reshape(1, -1)[:, : x.shape[-1]]])
    return x


def _default_extractor(model_type: str, cfg):
    """The model type's standard extractor, sized to ``cfg`` (random weights, or a folder without one)."""
    from transformers import ASTFeatureExtractor, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    if model_type in WAVE_TYPES:
        return Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=True
        )
    if model_type == "whisper":
        frames = 2 * cfg.max_source_positions  # the encoder's fixed input length in mel frames
        samples = frames * WHISPER_HOP
        if samples % SAMPLE_RATE:
            raise ConfigError(
                f"backbone {NAME!r}: whisper max_source_positions must be a multiple of 50 (whole seconds of input), got {cfg.max_source_positions}"
            )
        return WhisperFeatureExtractor(
            feature_size=cfg.num_mel_bins, sampling_rate=SAMPLE_RATE, hop_length=WHISPER_HOP, chunk_length=samples // SAMPLE_RATE
        )
    with _quiet_mel_bank():
        return ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length, sampling_rate=SAMPLE_RATE)


def _frontend(fe, model_type: str) -> Frontend:
    doc = json.loads(fe.to_json_string())
    doc.pop("processor_class", None)
    return Frontend(
        NAME,
        hf_audio_features,
        {"extractor": doc, "mask": model_type == "whisper"},
        description=f"{doc.get('feature_extractor_type', 'feature extractor')} of the {model_type} model",
    )


# -- pooling -----------------------------------------------------------------------------------------
def pool(h, w, how: str):
    """(B, T, H) frames, (B, T) weights 1 = a frame of the clip, 0 = padding -> (B, H) (2H: attentive-stats)."""
    import torch

    h = h.float()
    w = w.to(h.dtype)
    n = w.sum(dim=1, keepdim=True).clamp(min=1.0)
    if how == "mean":
        return (h * w[..., None]).sum(dim=1) / n
    if how == "max":
        return h.masked_fill(w[..., None] == 0, float("-inf")).max(dim=1).values
    if how == "gem":
        m = (torch.sign(h) * h.abs().pow(GEM_P) * w[..., None]).sum(dim=1) / n
        return torch.sign(m) * m.abs().clamp(min=1e-12).pow(1.0 / GEM_P)
    norms = h.norm(dim=-1)  # attentive-stats: softmax over frames of the standardised frame norms
    mu = (norms * w).sum(dim=1, keepdim=True) / n
    sd = (((norms - mu) ** 2 * w).sum(dim=1, keepdim=True) / n).sqrt()
    z = ((norms - mu) / (sd + 1e-6)).masked_fill(w == 0, float("-inf"))
    a = torch.softmax(z, dim=1)[..., None]
    mean = (a * h).sum(dim=1)
    std = ((a * h * h).sum(dim=1) - mean * mean).clamp(min=1e-8).sqrt()
    return torch.cat([mean, std], dim=-1)


@lru_cache(maxsize=None)
def _pooled_class():
    import torch
    from torch import nn

    class HFAudioPooled(nn.Module):
        """An encoder's hidden state ``layer``, pooled over its frames: (B, ...) input -> (B, D)."""

        def __init__(self, model, input_name: str, layer: int, pooling: str, masked: bool):
            super().__init__()
            self.model = model
            self.input_name, self.layer, self.pooling, self.masked = input_name, layer, pooling, masked

        def forward(self, x):
            m = None
            if self.masked:
                x, m = x[:, :-1], x[:, -1]
            h = self.model(**{self.input_name: x}, output_hidden_states=True).hidden_states[self.layer]
            t = h.shape[1]
            if m is None:
                w = torch.ones(h.shape[:2], device=h.device)
            else:  # the mask is per input frame; the encoder's frames are `stride` input frames apart
                stride = max(1, m.shape[1] // t)
                w = m[:, ::stride][:, :t]
            return pool(h, w, self.pooling)

    return HFAudioPooled


class HFAudioBackbone(Backbone):
    """:class:`Backbone` around a transformers audio encoder (``.model``); ``.extractor`` its feature extractor.

    Its blocks (for fine-tuning code) are ``rest`` (every parameter outside the transformer layers:
    the convolutional or patch front end, the projections and the final norm) and ``layer0``..; it
    is meant to be used frozen, and no fine-tuning method has been tried on it."""

    def __init__(self, *, model, extractor, **kw):
        super().__init__(**kw)
        self.model = model
        self.extractor = extractor

    def _block_modules(self, unit: str = "stage"):
        layers = _encoder_layers(self.model)
        seen = {id(p) for layer in layers for p in layer.parameters()}
        rest = [p for p in self.model.parameters() if id(p) not in seen]
        holder = _param_holder(rest)
        return [("rest", [holder])] + [(f"layer{i}", [layer]) for i, layer in enumerate(layers)]

    def _save_weights(self, directory: Path) -> None:
        import os
        import shutil
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix=".hf-audio-save-", dir=directory))
        try:
            with quiet_hf_loading():
                self.model.save_pretrained(str(tmp))
                self.extractor.save_pretrained(str(tmp))
            for f in sorted(tmp.iterdir()):
                os.replace(f, directory / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _encoder_layers(model) -> list:
    enc = getattr(model, "encoder", model)
    layers = getattr(enc, "layers", None) or getattr(enc, "layer", None)
    return list(layers or [])


def _param_holder(params):
    from torch import nn

    m = nn.Module()
    m.params = nn.ParameterList(params)
    return m


# -- the factory -------------------------------------------------------------------------------------
def _split_config(config: dict) -> tuple[str | None, int, str, dict]:
    mt = config.get("model_type")
    if mt is not None:
        if not isinstance(mt, str):
            raise ConfigError(f"backbone {NAME!r}: config model_type must be a string, got {mt!r}")
        mt = ALIASES.get(mt, mt)
        if mt not in MODEL_TYPES:
            raise ConfigError(f"backbone {NAME!r}: model_type {mt!r} is not supported (choose from {', '.join(MODEL_TYPES)})")
    layer = config.get("layer", -1)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ConfigError(f"backbone {NAME!r}: config layer must be an integer (-1 = the last), got {layer!r}")
    pooling = config.get("pooling", "mean")
    if pooling not in POOLINGS:
        raise ConfigError(f"backbone {NAME!r}: unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")
    return mt, layer, pooling, {k: v for k, v in config.items() if k not in OWN}


def _hf_config(model_type: str, folder: Path | None, overrides: dict):
    """The transformers config: the type's defaults (random weights) or the folder's, with ``overrides``
    (each must be a setting that config has: transformers would keep a misspelt one silently)."""
    from transformers import AutoConfig

    with quiet_hf_loading():
        base = AutoConfig.for_model(model_type) if folder is None else AutoConfig.from_pretrained(str(folder), local_files_only=True)
    known = set(base.to_dict()) | set(getattr(base, "attribute_map", {}))
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"backbone {NAME!r}: {model_type} has no config setting {unknown[0]!r}")
    if overrides:  # through the constructor: it derives settings (wav2vec2's conv layer count from conv_dim)
        doc = {**base.to_diff_dict(), **overrides}
        if "conv_dim" in overrides:
            doc.pop("num_feat_extract_layers", None)  # derived from conv_dim
        base = type(base).from_dict(doc)
    if model_type == "whisper":
        base.num_hidden_layers = base.encoder_layers
    return base


def _folder_model_type(folder: Path) -> str:
    from humwatch.io import read_json_doc

    doc = read_json_doc(folder / "config.json", missing=f"weights {folder}: no config.json (not a Hugging Face model folder)")
    mt = doc.get("model_type")
    if mt not in MODEL_TYPES:
        raise ConfigError(f"weights {folder}: holds a {mt!r} model; {NAME} supports {', '.join(MODEL_TYPES)}")
    return mt


def _folder_extractor(folder: Path, model_type: str, cfg):
    if not (folder / "preprocessor_config.json").is_file():
        log.warning("weights %s: no preprocessor_config.json; using the default %s feature extractor", folder, model_type)
        return _default_extractor(model_type, cfg)
    from transformers import AutoFeatureExtractor

    try:
        with quiet_hf_loading():
            with _quiet_mel_bank():
                return AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError/JSONDecodeError for bad files
        raise ConfigError(f"weights {folder}: preprocessor_config.json not usable ({one_line(e, 200)})") from None


def _check_extractor_fits(fe, model_type: str, cfg) -> None:
    """The extractor's output shape must be what the model takes (else the first clip would fail deep in torch)."""
    if model_type == "whisper":
        got = (getattr(fe, "feature_size", None), getattr(fe, "nb_max_frames", None))
        want = (cfg.num_mel_bins, 2 * cfg.max_source_positions)
    elif model_type == AST_TYPE:
        got = (getattr(fe, "num_mel_bins", None), getattr(fe, "max_length", None))
        want = (cfg.num_mel_bins, cfg.max_length)
    else:
        return
    if tuple(got) != tuple(want):
        raise ConfigError(
            f"backbone {NAME!r}: the feature extractor gives {got[0]} mel bins x {got[1]} frames, the {model_type} model takes {want[0]} x {want[1]}"
        )


@register_backbone(NAME)
def build_hf_audio(*, weights="default", precision="fp32", config=None, seed=0, device="cpu") -> LazyBackbone:
    """Factory registered as ``hf-audio`` (see the module docstring): identity now (config and
    extractor read, weights fingerprinted), the network on first need."""
    config = dict(config or {})
    mt, layer, pooling, overrides = _split_config(config)
    if weights in (None, "default"):
        raise ConfigError(
            f"backbone {NAME!r} has no default weights: pass --weights with a local model folder "
            "(config.json, model.safetensors, preprocessor_config.json) or a hub id, or --weights none "
            "with a model_type in --backbone-config for a random one"
        )
    resolved = resolve_weights(weights, "", optional_hub_files=("preprocessor_config.json",))
    folder = None
    meta = None
    if resolved.kind == "none":
        if mt is None:
            raise ConfigError(f"backbone {NAME!r}: random weights need a model_type in the config (one of {', '.join(MODEL_TYPES)})")
        info = WeightsInfo("none", True, f"seed {seed}", identity=f"none:seed={seed}")
    else:
        if resolved.kind == "file":
            raise ConfigError(
                f"weights {resolved.path}: {NAME} weights must be a folder with config.json, the model "
                "weights and preprocessor_config.json (as save_pretrained writes them)"
            )
        folder = resolved.path
        meta = read_meta(folder)
        check_meta_backbone(meta, NAME, folder)
        own = _folder_model_type(folder)
        if mt is not None and mt != own:
            raise ConfigError(f"weights {folder}: holds a {own!r} model, not the config's model_type {mt!r}")
        mt = own
        desc = f"pretrained {resolved.repo_id}" if resolved.kind == "hub" else f"loaded from {folder}"
        info = WeightsInfo(resolved.source, bool(meta and meta.get("random_init")), desc, identity=resolved.identity())
    try:
        cfg = _hf_config(mt, folder, overrides)
    except ConfigError:
        raise
    except Exception as e:  # a damaged config.json, a value transformers refuses
        raise ConfigError(f"backbone {NAME!r}: {mt} config not usable ({one_line(e, 200)})") from None
    n_layers = int(cfg.num_hidden_layers)
    if not -(n_layers + 1) <= layer <= n_layers:
        raise ConfigError(f"backbone {NAME!r}: layer {layer} does not exist ({mt} has hidden states 0..{n_layers}, or -1 for the last)")
    fe = _default_extractor(mt, cfg) if folder is None else _folder_extractor(folder, mt, cfg)
    _check_extractor_fits(fe, mt, cfg)
    frontend = _frontend(fe, mt)
    dim = int(cfg.hidden_size) * (2 if pooling == "attentive-stats" else 1)
    full = {"model_type": mt, "layer": layer, "pooling": pooling, **overrides}
    ident = dict(name=NAME, frontend=frontend, embedding_dim=dim, precision=precision, weights=info, config=full, device=device, seed=seed)

    def build() -> HFAudioBackbone:
        model = _build_model(mt, cfg, folder, seed)
        model.eval().to(device)
        input_name = "input_features" if mt == "whisper" else "input_values"
        module = _pooled_class()(model, input_name, layer, pooling, mt == "whisper").eval()
        return HFAudioBackbone(model=model, extractor=fe, module=module, **ident)

    return LazyBackbone(build=build, **ident)


def _build_model(model_type: str, cfg, folder: Path | None, seed: int):
    """The encoder: random (seeded) or loaded from ``folder``; Whisper's encoder alone."""
    import torch
    from transformers import AutoModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if folder is None or model_type == "whisper":
        try:
            with random_init_context(seed), quiet_hf_loading():
                model = WhisperEncoder(cfg) if model_type == "whisper" else AutoModel.from_config(cfg)
        except Exception as e:  # sizes transformers refuses (e.g. hidden_size not a multiple of the heads)
            raise ConfigError(f"backbone {NAME!r}: cannot build the {model_type} model ({one_line(e, 200)})") from None
        if folder is not None:
            _load_whisper_encoder(model, folder)
        return model
    try:
        with quiet_hf_loading():
            model, loading = AutoModel.from_pretrained(
                str(folder), config=cfg, dtype=torch.float32, local_files_only=True, output_loading_info=True
            )
    except Exception as e:  # transformers raises OSError/ValueError/RuntimeError/KeyError for bad folders
        raise ConfigError(f"weights {folder}: not loadable as a {model_type} model ({one_line(e, 200)})") from None
    bad = sorted(loading.get("missing_keys", [])) + sorted(str(k) for k in loading.get("mismatched_keys", []))
    bad = [k for k in bad if "masked_spec_embed" not in k]  # wav2vec2's pre-training mask vector, unused here
    if bad:
        raise ConfigError(
            f"weights {folder}: do not fit the {model_type} architecture ({len(bad)} tensors missing or mis-shaped, e.g. {bad[0]})"
        )
    return model


def _load_whisper_encoder(encoder, folder: Path) -> None:
    """Load the encoder's tensors from a Whisper checkpoint (``model.encoder.*`` of
    WhisperForConditionalGeneration, ``encoder.*`` of WhisperModel, or an encoder saved alone); the
    decoder's are skipped. Why not ``from_pretrained``: WhisperEncoder's would not find the
    prefixed keys, and WhisperModel's would build (and load) the whole decoder for nothing."""
    sd = load_state_dict(find_weight_file(folder))
    own = {}
    for k, v in sd.items():
        for prefix in ("model.encoder.", "encoder.", ""):
            if k.startswith(prefix) and not k.startswith(("model.decoder.", "decoder.", "proj_out")):
                own.setdefault(k[len(prefix) :], v)
                break
    want = encoder.state_dict()
    missing = sorted(k for k in want if k not in own)
    shaped = sorted(k for k in want if k in own and tuple(own[k].shape) != tuple(want[k].shape))
    if missing or shaped:
        bad = missing + shaped
        raise ConfigError(f"weights {folder}: do not fit the whisper encoder ({len(bad)} tensors missing or mis-shaped, e.g. {bad[0]})")
    encoder.load_state_dict({k: own[k].float() for k in want}, strict=True)
