"""Error types, and the one way a message quotes another error.

Every error a user can cause is an :class:`HumwatchError` whose message is one line that names the
thing at fault; the command line prints it and exits 2 (the service answers 422), never a traceback.

A file humwatch wrote that cannot be read back (not readable, not UTF-8, not JSON, CSV, npz or
safetensors, truncated, not the kind of document written: a monitor.json, a method.json, a run's
results.json, config.json or scores.csv, a manifest, a backbone's config.json, a saved embeddings
.npz) is a :class:`DamagedFileError` wherever it is read, never a ConfigError here and a
DatasetError there, with the message ``PATH: damaged (reason)``: :func:`humwatch.io.read_json`,
:func:`humwatch.io.read_json_doc` and :func:`humwatch.io.damaged` make it; the command line exits 2.
What can be made again is not fatal: a damaged cache entry, resume record (compare, reproduce) or
output marker is a miss, with one warning line that says what is done instead
(:func:`humwatch.io.read_record`). Files the user writes (a study.yaml, a method spec file, a
dataset's manifest CSV) that cannot be parsed stay a ConfigError or DatasetError.

:func:`one_line` is how a message quotes another error: its first line, or its type's name when it
has no message. No other module takes the first line of an error by hand.
"""


class HumwatchError(Exception):
    """Base class: a problem with the user's input, files or options (not a bug)."""


class AudioError(HumwatchError):
    """A file that cannot be used as audio (missing, empty, truncated, not audio, NaN, silent...)."""


class DatasetError(HumwatchError):
    """A data folder, layout or manifest that cannot be read as a dataset."""


class ConfigError(HumwatchError):
    """A wrong option or setting."""


class DamagedFileError(HumwatchError):
    """A file humwatch wrote that cannot be read back (see the module docstring): ``PATH: damaged (reason)``."""


def one_line(e: BaseException, limit: int | None = None, typed: bool = False) -> str:
    """The first non-blank line of ``e``'s message, stripped (at most ``limit`` characters); the name of
    ``e``'s type when the message is empty. ``typed``: an error that is not a :class:`HumwatchError`
    is named with its type, ``"KeyError: 'x'"`` (its type says what went wrong; ours say it in words)."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    text = text[:limit] if limit is not None else text
    if not text:
        return type(e).__name__
    return f"{type(e).__name__}: {text}" if typed and not isinstance(e, HumwatchError) else text
