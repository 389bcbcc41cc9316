"""`humwatch reproduce`: every cell of the study's Table III, resumable, against the published AUCs.

Rows (methods) x columns (data):

* ``autoencoder``: the MIMII baseline (:mod:`humwatch.models.autoencoder`), 50 epochs, lr 1e-3, batch 512;
* ``cnn-supervised`` / ``ast-supervised``: ResNeXt101_32x8d / AST fine-tuned with the study's head
  (:mod:`humwatch.finetune`: 1 epoch, lr 1e-3 for the head, the top 2 blocks at lr/10 and lr/100; a
  block of ResNeXt is one bottleneck module by default, ``block_unit`` in ``study.yaml``);
* ``cnn-lof`` / ``ast-lof``: pretrained embeddings into Local Outlier Factor (``lof-vote``:
  n_neighbors 4, four LOFs with contaminations 0.1, 0.2, 0.3, 0.4), reported in two readings: the
  AUC of the continuous LOF score, and the AUC of the vote count (the study's literal reading: a
  majority vote of the four LOFs' 0/1 predictions, then AUC);

* ``fan_00``: fan id_00 alone (trained and tested on id_00 only); ``fan_all``, ``pump_all``,
  ``valve_all``, ``slider_all``: all ids of the machine type together (one model per type).

Each row of the study config (``configs/study.yaml``) is a method spec, as ``humwatch compare``
takes them (:mod:`humwatch.methods.spec`); a cell is that spec on one column's data, named
``<row>__<column>``. Every cell is one run directory ``OUT/runs/<row>__<column>/`` (config.json,
split.csv, scores.csv, results.json, results.md: everything to repeat it) and one result file
``OUT/cells/<row>__<column>.json`` written atomically when the cell finishes. The cells run through
the orchestrator ``compare`` uses (:func:`humwatch.orchestrator.run_jobs`): running again skips
every finished cell whose :func:`humwatch.orchestrator.fingerprint` is unchanged, and retries failed
ones. A config in the old dialect (:mod:`humwatch.reproduce.legacy`) is read and converted. A cell that fails (any error) is reported as ``failed`` with its
one-line reason; the other cells still run. Embeddings come from the cache ``OUT/cache``.

The tables ``OUT/table3.md``, ``table3.csv`` and ``table3.json`` give, per cell, our AUC, the
published AUC and the difference (ours - published), the test clip counts, the weights used
(RANDOM INIT said loudly), the seed, the seconds the cell took, and the machine.

``--snr 6dB`` (or ``snr:`` in the config) picks one MIMII noise level when ``--data`` holds several.

``--weights-dir DIR`` takes local weights instead of the hub (for backbones whose configured
weights are ``default``): ``DIR/ast/`` (an AST
``save_pretrained`` folder) and ``DIR/resnext101_32x8d/`` (a folder) or
``DIR/resnext101_32x8d.{safetensors,pth,pt,bin}`` (a timm checkpoint file); in general
``DIR/<backbone name>`` as a folder or with a checkpoint suffix (see :data:`WEIGHTS_DIR_NAMES`).

``--synthetic`` runs the same table on built-in generated data (:func:`humwatch.data.synth.synthesize`
into ``OUT/data``, reused when its settings match) with random-initialised *tiny* backbones
(:data:`humwatch.models.TINY_CONFIGS`) and fewer autoencoder epochs (:func:`reproduce_synthetic_defaults`); its
table says so: those numbers are not comparable with the published ones.
"""

from humwatch.reproduce.cells import (
    CellSpec,
    cell_record,
    plan_cells,
    published,
    reproduce,
    resolve_weights_dir,
    row_kind,
    run_cell,
    with_precision,
    write_report_for,
)
from humwatch.reproduce.config import (
    COLUMNS,
    PUBLISHED,
    ROWS,
    WEIGHTS_DIR_NAMES,
    StudyConfig,
    default_config_path,
    load_study_config,
    parse_study_config,
)
from humwatch.reproduce.synthetic import SyntheticSettings, apply_synthetic, reproduce_synthetic_defaults, synthetic_data
from humwatch.reproduce.tables import Table3, render_markdown, write_tables

__all__ = [
    "COLUMNS",
    "PUBLISHED",
    "ROWS",
    "WEIGHTS_DIR_NAMES",
    "CellSpec",
    "StudyConfig",
    "SyntheticSettings",
    "Table3",
    "apply_synthetic",
    "cell_record",
    "default_config_path",
    "load_study_config",
    "parse_study_config",
    "plan_cells",
    "published",
    "render_markdown",
    "reproduce",
    "reproduce_synthetic_defaults",
    "resolve_weights_dir",
    "row_kind",
    "run_cell",
    "synthetic_data",
    "with_precision",
    "write_report_for",
    "write_tables",
]
