"""t-SNE of a run's embeddings (the study's Figs. 3 and 4), AST beside the CNN.

Everything comes from the embeddings a run saved (``RUN_DIR/embeddings/<backbone>.npz`` with arrays
``X, path, label, machine_type, machine_id, split``): no model is built and no audio is read. One
t-SNE is fitted per backbone and machine type (the detectors are fitted per machine type too) and
drawn twice: coloured by normal/anomalous and by machine id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from humwatch.errors import ConfigError

NPZ_KEYS = ("X", "path", "label", "machine_type", "machine_id", "split")
"""The arrays of an :class:`EmbeddingTable` (as in the run's ``.npz``)."""
MIN_POINTS = 5
SINGLE_THREAD_POINTS = 3000


@dataclass
class EmbeddingTable:
    """A run's saved embeddings."""

    name: str
    X: np.ndarray
    path: np.ndarray
    label: np.ndarray
    machine_type: np.ndarray
    machine_id: np.ndarray
    split: np.ndarray
    source: str = ""
    random_init: bool | None = None

    def __len__(self) -> int:
        return len(self.X)

    def select(self, mask: np.ndarray) -> "EmbeddingTable":
        return EmbeddingTable(
            self.name,
            self.X[mask],
            self.path[mask],
            self.label[mask],
            self.machine_type[mask],
            self.machine_id[mask],
            self.split[mask],
            self.source,
            self.random_init,
        )


def load_embeddings(path: str | Path, name: str | None = None) -> EmbeddingTable:
    """Read an embeddings ``.npz`` written by a run (:meth:`humwatch.embed.EmbeddingSet.load_npz`)."""
    from humwatch.embed import EmbeddingSet
    from humwatch.rundir import RunDir

    path = Path(path)
    emb = EmbeddingSet.load_npz(path)
    if len(emb) == 0:
        raise ConfigError(f"{path}: holds no embeddings")
    if not np.isfinite(emb.X).all():
        raise ConfigError(f"{path}: embeddings contain NaN or infinite values")
    run = RunDir(path.parent.parent)
    c = emb.clips
    return EmbeddingTable(
        name=name or path.stem,
        X=emb.X,
        path=np.array([x.path for x in c]),
        label=np.array([x.label for x in c], dtype=int),
        machine_type=np.array([x.machine_type for x in c]),
        machine_id=np.array([x.machine_id for x in c]),
        split=np.array([x.split for x in c]),
        source=str(path),
        random_init=run.random_init if RunDir.is_run(run.path) else None,
    )


def find_embedding_files(run_dir: str | Path) -> dict[str, list[Path]]:
    """{backbone: [npz, ...]} of the runs at and below ``run_dir`` (:meth:`RunDir.find`); AST first."""
    from humwatch.rundir import RunDir

    found: dict[str, list[Path]] = {}
    for rd in RunDir.find(run_dir):
        for name, f in rd.embedding_files().items():
            found.setdefault(name, []).append(f)
    return dict(sorted(found.items(), key=lambda kv: backbone_order(kv[0])))


def concat_tables(tables: Sequence[EmbeddingTable]) -> EmbeddingTable:
    """One table from several of the same backbone (e.g. one per reproduce cell); a clip that
    appears more than once keeps its first row."""
    if len(tables) == 1:
        return tables[0]
    dims = {t.X.shape[1] for t in tables}
    if len(dims) > 1:
        raise ConfigError(f"{tables[0].name}: embeddings of different sizes {sorted(dims)} cannot be drawn together")
    cat = {k: np.concatenate([getattr(t, k) for t in tables]) for k in NPZ_KEYS}
    _, first = np.unique(cat["path"], return_index=True)
    keep = np.sort(first)
    return EmbeddingTable(
        tables[0].name,
        *(cat[k][keep] for k in NPZ_KEYS),
        source=", ".join(t.source for t in tables),
        random_init=any(bool(t.random_init) for t in tables) if any(t.random_init is not None for t in tables) else None,
    )


def backbone_order(name: str) -> tuple[int, str]:
    """Sort key: the transformer before the CNN, then by name."""
    n = name.lower()
    return (0 if n.startswith("ast") else 1 if ("resne" in n or "cnn" in n) else 2, n)


def display_name(name: str) -> str:
    n = name.lower()
    if n.startswith("ast"):
        return "AST" + name[3:]
    if n.startswith("resnext101_32x8d"):
        return "ResNeXt-101 32x8d" + name[len("resnext101_32x8d") :]
    return name


def tsne_2d(X: np.ndarray, seed: int = 0, perplexity: float = 30.0, standardize: bool = True) -> np.ndarray:
    """2-D t-SNE coordinates of the rows of ``X`` (perplexity capped for small sets)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    if n < MIN_POINTS:
        raise ConfigError(f"t-SNE needs at least {MIN_POINTS} clips, got {n}")
    if standardize:
        sd = X.std(0)
        X = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    perp = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", random_state=seed)
    # scikit-learn's Barnes-Hut step uses OpenMP threads that spin-wait: on a busy machine a few
    # hundred points can take a minute instead of a second, so small sets run on one thread
    with threadpool_limits(limits=1 if n <= SINGLE_THREAD_POINTS else None):
        return tsne.fit_transform(X).astype(np.float32)


@dataclass
class TsnePanel:
    """The t-SNE of one backbone's embeddings of one machine type."""

    backbone: str
    machine_type: str
    coords: np.ndarray
    label: np.ndarray
    machine_id: np.ndarray
    random_init: bool | None = None


@dataclass
class TsneResult:
    panels: list[TsnePanel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def backbones(self) -> list[str]:
        return sorted({p.backbone for p in self.panels}, key=backbone_order)

    @property
    def machine_types(self) -> list[str]:
        return sorted({p.machine_type for p in self.panels})

    def get(self, backbone: str, machine_type: str) -> TsnePanel | None:
        for p in self.panels:
            if p.backbone == backbone and p.machine_type == machine_type:
                return p
        return None


def tsne_panels(
    tables: Sequence[EmbeddingTable], splits: Sequence[str] | None = None, seed: int = 0, perplexity: float = 30.0
) -> TsneResult:
    """One t-SNE per backbone and machine type (of the clips in ``splits``; all when None)."""
    res = TsneResult()
    for t in tables:
        if splits:
            t = t.select(np.isin(t.split, list(splits)))
        for mtype in sorted(set(t.machine_type)):
            sub = t.select(t.machine_type == mtype)
            if len(sub) < MIN_POINTS:
                res.notes.append(f"t-SNE: {t.name}/{mtype} has only {len(sub)} clips, skipped")
                continue
            res.panels.append(TsnePanel(t.name, mtype, tsne_2d(sub.X, seed, perplexity), sub.label, sub.machine_id, t.random_init))
    return res


def tsne_figure(result: TsneResult, color_by: str = "label", title: str = ""):
    """Rows: machine types; columns: backbones (AST first). ``color_by``: ``label`` or ``machine_id``."""
    from humwatch.explain._plot import pyplot

    if color_by not in ("label", "machine_id"):
        raise ConfigError(f"t-SNE colour must be label or machine_id, got {color_by!r}")
    if not result.panels:
        raise ConfigError("no embeddings to draw a t-SNE of")
    plt = pyplot()
    bbs, types = result.backbones, result.machine_types
    fig, axes = plt.subplots(len(types), len(bbs), figsize=(4.0 * len(bbs), 3.4 * len(types)), squeeze=False, constrained_layout=True)
    for i, mtype in enumerate(types):
        for j, bb in enumerate(bbs):
            ax = axes[i][j]
            p = result.get(bb, mtype)
            if p is None:
                ax.axis("off")
                continue
            if color_by == "label":
                groups = [(p.label == 0, "normal", "tab:blue", "o"), (p.label == 1, "anomalous", "tab:red", "x")]
            else:
                cmap = plt.get_cmap("tab10")
                groups = [(p.machine_id == mid, mid, cmap(k % 10), "o") for k, mid in enumerate(sorted(set(p.machine_id)))]
            for mask, name, colour, marker in groups:
                if mask.any():
                    ax.scatter(p.coords[mask, 0], p.coords[mask, 1], s=12, c=[colour], marker=marker, label=name, alpha=0.8, linewidths=1)
            head = f"{display_name(bb)} - {mtype}"
            if p.random_init:
                head += " (RANDOM INIT)"
            ax.set_title(head)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=8, loc="best", markerscale=1.2)
    if title:
        fig.suptitle(title)
    return fig
