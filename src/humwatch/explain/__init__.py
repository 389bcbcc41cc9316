"""Pictures that explain the models (the study's Figs. 2-6) and a one-page HTML report of a run.

* :mod:`~humwatch.explain.spectrograms` - linear and mel spectrograms, normal beside anomalous;
* :mod:`~humwatch.explain.tsne` - t-SNE of a run's saved embeddings (no model time);
* :mod:`~humwatch.explain.attention` - AST mean attention distance, class-token maps, rollout;
* :mod:`~humwatch.explain.gradcam` - Grad-CAM of the CNN (pytorch-grad-cam);
* :mod:`~humwatch.explain.report` - the self-contained ``report.html``;
* :mod:`~humwatch.explain.run` - :func:`explain_run` / :func:`explain_clips`, what ``humwatch explain`` calls.

Importing this package is cheap (torch, transformers, matplotlib are imported when used).
"""

from humwatch.explain.attention import PatchGrid, attention_rollout, class_token_map, mean_attention_distance, patch_coordinates
from humwatch.explain.report import Figure, Section, write_report
from humwatch.explain.run import ExplainResult, explain_clips, explain_run

__all__ = [
    "ExplainResult",
    "Figure",
    "PatchGrid",
    "Section",
    "attention_rollout",
    "class_token_map",
    "explain_clips",
    "explain_run",
    "mean_attention_distance",
    "patch_coordinates",
    "write_report",
]
