"""Error types. Every error a user can cause is an :class:`HumwatchError` whose message is one line
that names the thing at fault; the command line prints it and exits non-zero, never a traceback."""


class HumwatchError(Exception):
    """Base class: a problem with the user's input, files or options (not a bug)."""


class AudioError(HumwatchError):
    """A file that cannot be used as audio (missing, empty, truncated, not audio, NaN, silent...)."""


class DatasetError(HumwatchError):
    """A data folder, layout or manifest that cannot be read as a dataset."""


class ConfigError(HumwatchError):
    """A wrong option or setting."""
