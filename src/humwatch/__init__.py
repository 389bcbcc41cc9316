"""humwatch: anomalous machine sound detection.

Turn recordings of a machine into a fitted detector, score new recordings, and run the
AST-versus-CNN study (MIMII; autoencoder baseline, LOF on embeddings, supervised fine-tuning)
end to end.
"""

__version__ = "0.1.0"

from humwatch.errors import HumwatchError  # noqa: E402

__all__ = ["HumwatchError", "__version__"]
