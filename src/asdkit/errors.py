"""Error types. Every error a user can cause is an :class:`AsdkitError` whose message is one line
that names the thing at fault; the command line prints it and exits non-zero, never a traceback."""


class AsdkitError(Exception):
    """Base class: a problem with the user's input, files or options (not a bug)."""


class AudioError(AsdkitError):
    """A file that cannot be used as audio (missing, empty, truncated, not audio, NaN, silent...)."""


class DatasetError(AsdkitError):
    """A data folder, layout or manifest that cannot be read as a dataset."""


class ConfigError(AsdkitError):
    """A wrong option or setting."""
