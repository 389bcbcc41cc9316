"""One way to check a value (issue 19, item 3): the declarative rules of :mod:`humwatch.settings`
are what the detectors, the audio settings, the command line, the service and the monitor check by;
each shared range is written once and every place that takes the value refuses the same bad value
in the same words."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from humwatch.audio import AudioSettings, saved_audio_settings
from humwatch.cli import main
from humwatch.errors import ConfigError
from humwatch.settings import (
    ALERT_COUNT,
    CHANNEL,
    CONTAMINATION,
    FALSE_ALARM_RATE,
    FOLDS,
    SAMPLE_RATE_HZ,
    SEED,
    WINDOW_SECONDS,
    Settings,
    describe,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "humwatch"


def _wants(rule) -> str:
    return f"must be {describe(rule)}"


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error:") and "\n" not in err, err
    return err


# ---------------------------------------------------------------------------------- window length


def test_every_place_refuses_the_same_window_length_in_the_same_words(tmp_path, capsys):
    from humwatch.calibrate import fit_monitor
    from humwatch.data.synth import synthesize
    from humwatch.service.listen import ListenSettings

    wants = _wants(WINDOW_SECONDS)
    assert wants == "must be a number at least 0.5 and at most 600"
    messages = [
        _cli_error(["fit", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--window-seconds", "700"], capsys),
        _cli_error(["listen", "--seconds", "700", "--watch", str(tmp_path)], capsys),
    ]
    for call in (
        lambda: ListenSettings.from_dict({"seconds": 700, "spool": str(tmp_path)}),  # the service's client
        lambda: fit_monitor([], seconds=700),  # fitting a monitor
        lambda: saved_audio_settings(
            {"sample_rate": 16000, "seconds": 700, "channel": None}, "m/monitor.json", seconds_required=True
        ),  # a saved monitor
        lambda: synthesize(tmp_path / "synth", seconds=700, progress=False),
    ):  # the built-in data
        with pytest.raises(ConfigError) as e:
            call()
        messages.append(str(e.value))
    for m in messages:
        assert wants in m and "700" in m and "\n" not in m, m
    assert not (tmp_path / "m").exists() and not (tmp_path / "synth").exists()
    # the shortest window too, and the bounds themselves are accepted
    with pytest.raises(ConfigError, match=wants):
        ListenSettings.from_dict({"seconds": 0.4, "spool": str(tmp_path)})
    assert ListenSettings.from_dict({"seconds": 600, "spool": str(tmp_path)}).seconds == 600.0
    assert ListenSettings.from_dict({"seconds": 0.5, "spool": str(tmp_path)}).seconds == 0.5


def test_false_alarm_rate_folds_and_seed_are_one_rule_each(tmp_path, capsys):
    from humwatch.calibrate import fit_monitor
    from humwatch.data.split import study_split
    from humwatch.metrics import threshold_from_scores

    data = ["fit", "--data", str(tmp_path), "--out", str(tmp_path / "m")]
    # 1.0 was let through by the option (max=1.0) and refused later by the calibration: now by both alike
    for err in (_cli_error([*data, "--false-alarm-rate", "1.0"], capsys),):
        assert err.startswith("error: --false-alarm-rate " + _wants(FALSE_ALARM_RATE))
    for call in (lambda: fit_monitor([], false_alarm_rate=1.0), lambda: threshold_from_scores(np.arange(100.0), 1.0)):
        with pytest.raises(ConfigError, match=_wants(FALSE_ALARM_RATE)):
            call()
    assert _wants(FOLDS) in _cli_error([*data, "--folds", "1"], capsys)
    with pytest.raises(ConfigError, match=_wants(FOLDS)):
        fit_monitor([], folds=1)
    for argv in ([*data, "--seed", "-1"], ["synth", str(tmp_path / "s"), "--seed", "-1"]):
        assert _cli_error(argv, capsys).startswith("error: --seed " + _wants(SEED))
    with pytest.raises(ConfigError, match="seed " + _wants(SEED)):
        study_split([], seed=-1)


def test_ports_retries_and_alert_counts_come_from_one_definition(capsys, tmp_path):
    from pydantic import ValidationError

    from humwatch.service.alerts import AlertRule
    from humwatch.service.config import PORT, RETRIES, ServiceSettings
    from humwatch.service.schemas import AlertRuleIn

    err = _cli_error(["serve", str(tmp_path), "--smtp-port", "0"], capsys)
    assert err == f"error: --smtp-port {_wants(PORT)}, got 0"
    with pytest.raises(ConfigError, match="smtp_port " + _wants(PORT)):
        ServiceSettings.from_dict({"smtp_port": 0})
    assert _wants(RETRIES) in _cli_error(["serve", str(tmp_path), "--webhook-retries", "21"], capsys)
    with pytest.raises(ConfigError, match="webhook_retries " + _wants(RETRIES)):
        ServiceSettings.from_dict({"webhook_retries": 21})
    # the API body's bounds are the alert rule's
    schema = AlertRuleIn.model_json_schema()["properties"]
    for key in "knm":
        assert (schema[key]["minimum"], schema[key]["maximum"]) == (ALERT_COUNT.low, ALERT_COUNT.high)
    with pytest.raises(ValidationError):
        AlertRuleIn(k=1, n=ALERT_COUNT.high + 1, m=1)
    with pytest.raises(ConfigError, match="alert rule: N " + _wants(ALERT_COUNT)):
        AlertRule(1, ALERT_COUNT.high + 1, 1)


# ---------------------------------------------------------------------------------------- detectors


def test_every_detector_parameter_has_a_rule_and_bad_ones_are_one_line():
    from humwatch.detectors import DETECTORS, create_detector

    for name, cls in DETECTORS.items():
        assert set(cls.param_rules) == set(cls._get_param_names()), name
        create_detector(name)  # the defaults pass their own rules
        with pytest.raises(ConfigError) as e:
            create_detector(name, standardize="yes")
        assert str(e.value) == f"detector '{name}': standardize must be true or false, got 'yes'"
    with pytest.raises(ConfigError) as e:
        create_detector("lof", contamination=0.7)
    assert str(e.value) == f"detector 'lof': contamination must be 'auto' or {describe(CONTAMINATION)}, got 0.7"
    with pytest.raises(ConfigError) as e:
        create_detector("lof-vote", contaminations=(0.1, 0.7))
    assert "contaminations must be a list, each item " + describe(CONTAMINATION) + " (not 0.7)" in str(e.value)
    with pytest.raises(ConfigError, match="detector 'gmm': random_state must be None, a whole number"):
        create_detector("gmm", random_state=-1)
    with pytest.raises(ConfigError, match="detector 'knn-ldn': gem_p must be a number at least 1"):
        create_detector("knn-ldn", gem_p="3")  # a text is not a number here (it would reach the maths)
    with pytest.raises(ConfigError, match="unknown parameter"):
        create_detector("knn", k=3)


def test_checking_a_detector_never_changes_its_parameters():
    from humwatch.detectors import create_detector

    det = create_detector("lof-vote", contaminations=(0.1, 0.2), n_neighbors=np.int64(3), standardize=np.bool_(True))
    before = det.get_params()
    det.fit(np.random.default_rng(0).normal(size=(20, 3)))
    after = det.get_params()
    assert after["contaminations"] == (0.1, 0.2) and type(after["n_neighbors"]) is np.int64
    assert type(after["standardize"]) is np.bool_ and before.keys() == after.keys()
    clone(det)  # scikit-learn's clone still sees the parameters it was given


# ---------------------------------------------------------------------------------- audio settings


def test_audio_settings_are_settings_checked_when_made():
    a = AudioSettings()
    assert isinstance(a, Settings) and a.to_dict() == {"sample_rate": 16000, "seconds": 10.0, "channel": None}
    assert hash(a) == hash(AudioSettings(16000, 10, None)) and a == AudioSettings(16000, 10, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.seconds = 5.0
    for kw, words in (
        (dict(channel=-1), "audio: channel " + _wants(CHANNEL)),
        (dict(sample_rate=10), "audio: sample_rate " + _wants(SAMPLE_RATE_HZ)),
        (dict(seconds=601), "audio: seconds must be a number above 0 and at most 600"),
        (dict(seconds=True), "audio: seconds must be"),
    ):
        with pytest.raises(ConfigError) as e:
            AudioSettings(**kw)
        assert str(e.value).startswith(words), str(e.value)
    assert AudioSettings(seconds=None).n_samples is None and AudioSettings(seconds=0.1).n_samples == 1600
    with pytest.raises(ConfigError, match="unknown setting"):
        AudioSettings.from_dict({"rate": 8000})
    assert AudioSettings.from_dict({"seconds": 2}) == AudioSettings(seconds=2.0)


def test_saved_audio_settings_use_the_audio_settings_rules():
    good = {"sample_rate": 22050, "seconds": 2.0, "channel": 1}
    assert saved_audio_settings(good, "x") == AudioSettings(22050, 2.0, 1)
    with pytest.raises(ConfigError, match="x: audio.sample_rate " + _wants(SAMPLE_RATE_HZ)):
        saved_audio_settings({**good, "sample_rate": 500}, "x")
    with pytest.raises(ConfigError, match="x: audio.channel " + _wants(CHANNEL)):
        saved_audio_settings({**good, "channel": 5000}, "x")
    with pytest.raises(ConfigError, match="unknown field"):
        saved_audio_settings({**good, "gain": 2}, "x")
    with pytest.raises(ConfigError, match="x: audio.seconds " + _wants(WINDOW_SECONDS)):
        saved_audio_settings({**good, "seconds": 0.1}, "x")  # a saved window is a window


# ------------------------------------------------------------------------------ written only once


def _number(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _number(node.operand)
        return None if v is None else -v
    return None


def _bound_pairs():
    """(file, line, numbers) of every call's own arguments and every comparison's own operands."""
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                parts = [*node.args, *(k.value for k in node.keywords)]
            elif isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
            else:
                continue
            nums = {n for n in map(_number, parts) if n is not None}
            if nums:
                yield path.relative_to(SRC).as_posix(), node.lineno, nums


@pytest.mark.parametrize(
    "low,high,home",
    [
        (0.5, 600, "settings.py"),  # a window's length
        (1000, 384000, "settings.py"),  # the sample rates humwatch reads
        (1, 1000, "settings.py"),  # K, N, M of an alert rule
        (1, 65535, "service/config.py"),  # a TCP port
        (0, 20, "service/config.py"),  # notification retries
    ],
)
def test_each_shared_range_is_written_once(low, high, home):
    found = [(f, line) for f, line, nums in _bound_pairs() if low in nums and high in nums]
    assert len(found) == 1 and found[0][0] == home, found
