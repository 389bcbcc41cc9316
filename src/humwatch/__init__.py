"""humwatch: anomalous machine sound detection.

Turn recordings of a machine into a fitted detector, score new recordings, and run the
AST-versus-CNN study (MIMII; autoencoder baseline, LOF on embeddings, supervised fine-tuning)
end to end.
"""

from humwatch._version import __version__
from humwatch.errors import HumwatchError

__all__ = ["HumwatchError", "__version__"]
