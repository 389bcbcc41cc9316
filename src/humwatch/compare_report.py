"""The leaderboard of ``humwatch compare`` as files: ``compare.md``, ``compare.csv``, ``compare.json``
and ``compare.png`` (AUC and pAUC, methods by machine type).

The ranking is by DCASE's official score (:func:`humwatch.metrics.official_score`: the harmonic mean
of every machine id's or section's AUC and pAUC, source and target AUC where the clips carry
domains), then by mean AUC. Every mean shown says which it is: ``AUC (amean of ids)``, ``pAUC
(amean of ids)``, ``source AUC (amean of ids)`` and ``target AUC (amean of ids)`` are arithmetic
means over the machine ids (sections); a machine type's AUC is ``(pooled)``, over all its clips
(one model per type, as the study), or ``(amean of ids)`` when the runs were per id.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from humwatch.io import write_csv, write_json, write_text
from humwatch.models.weights import random_init_warning


def _f(v: Any, nd: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def ranked(records: Sequence[dict]) -> list[dict]:
    """Finished methods best first (official score, then mean AUC), failed ones last."""

    def key(r):
        s, a = r.get("official_score"), r.get("mean_auc")
        bad = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
        return (r["status"] != "ok", -(0 if bad(s) else s), -(0 if bad(a) else a))

    return sorted(records, key=key)


def machine_types(records: Sequence[dict]) -> list[str]:
    return sorted({t for r in records for t in (r.get("by_type") or {})})


def has_domains(records: Sequence[dict]) -> bool:
    return any(r.get("auc_source") is not None for r in records)


def _memory(r: dict) -> str:
    return "n/a" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}"


AMEAN = "amean of ids"
"""How the leaderboard labels an arithmetic mean over the machine ids (sections)."""


def leaderboard(
    records: Sequence[dict], digits: int = 4, mark: Callable[[str], str] = lambda text: text, per_id: bool = False
) -> tuple[list[str], list[list[str]]]:
    """The ranking as ``(columns, rows)`` of text cells, one row per method, best first: what
    compare.md and the console show; every mean is labelled (module doc; ``per_id``: the runs
    were per id, so a type's AUC is the mean of its ids'). ``mark`` wraps the RANDOM INIT and
    failure notes (console colour)."""
    recs = ranked(records)
    types = machine_types(recs)
    dom = has_domains(recs)
    by_type = AMEAN if per_id else "pooled"
    head = [
        "rank",
        "method",
        "score (hmean)",
        f"AUC ({AMEAN})",
        f"pAUC ({AMEAN})",
        *([f"source AUC ({AMEAN})", f"target AUC ({AMEAN})"] if dom else []),
        *[f"{t} AUC ({by_type})" for t in types],
        "seconds",
        "peak MB",
    ]
    f = lambda v: _f(v, digits)  # noqa: E731
    rows = []
    for i, r in enumerate(recs, start=1):
        name = r["name"] + (f" {mark('(RANDOM INIT)')}" if r.get("random_init") else "")
        if r["status"] != "ok":
            rows.append([str(i), name, mark(f"failed: {r.get('reason', '')}"), *[""] * (len(head) - 3)])
            continue
        by = r.get("by_type") or {}
        rows.append(
            [
                str(i),
                name,
                f(r.get("official_score")),
                f(r.get("mean_auc")),
                f(r.get("mean_pauc")),
                *([f(r.get("auc_source")), f(r.get("auc_target"))] if dom else []),
                *[f((by.get(t) or {}).get("auc")) for t in types],
                f"{r.get('seconds', 0):.0f}",
                _memory(r),
            ]
        )
    return head, rows


def render_markdown(records: Sequence[dict], meta: dict) -> str:
    recs = ranked(records)
    lines = [f"# {meta.get('title', 'humwatch compare')}", ""]
    rand = [r["name"] for r in recs if r.get("random_init")]
    if rand:
        lines += [f"**{random_init_warning(', '.join(rand))}**", ""]
    failed = [r for r in recs if r["status"] != "ok"]
    if failed:
        lines += [f"**{len(failed)} method(s) failed** (run again to retry them; finished ones are kept).", ""]
    machine = meta.get("machine", {})
    lines += [
        f"- data: {meta.get('data')}" + (f" ({meta['snr']})" if meta.get("snr") else ""),
        f"- seed {meta.get('seed')}; {'per machine id' if meta.get('per_id') else 'one model per machine type'}"
        f"{'; the dataset own train/test split' if meta.get('dataset_split') else ''}",
        f"- machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; {meta.get('date', '')}; {meta.get('seconds', 0):.0f} s in all",
        "",
    ]
    head, rows = leaderboard(recs, per_id=bool(meta.get("per_id")))
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
    lines += ["", "## Methods", ""]
    for r in recs:
        extra = "".join(f"; AUC of its {k} reading {_f(v)}" for k, v in (r.get("readings") or {}).items() if v is not None)
        oe = f"; outlier exposure: {r['outlier_exposure']}" if r.get("outlier_exposure") not in (None, "none") else ""
        lines.append(
            f"- **{r['name']}**: `{r.get('spec', r['method'])}`"
            + (f" ({r.get('label')}; weights: {r.get('weights') or 'n/a'}{extra}{oe})" if r["status"] == "ok" else "")
        )
    lines += ["", "## Per machine id or section (AUC / pAUC)", ""]
    ids = sorted({(row["machine_type"], row["machine_id"]) for r in recs for row in r.get("rows") or [] if row["machine_id"] != "all"})
    if ids:
        head = ["method", *[f"{t} {i}" for t, i in ids]]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
        for r in recs:
            if r["status"] != "ok":
                continue
            got = {(row["machine_type"], row["machine_id"]): row for row in r.get("rows") or []}
            lines.append(
                "| "
                + " | ".join(
                    [r["name"], *[f"{_f((got.get(k) or {}).get('auc'), 3)} / {_f((got.get(k) or {}).get('pauc'), 3)}" for k in ids]]
                )
                + " |"
            )
    lines += [
        "",
        "Score: DCASE's harmonic mean of every id's (section's) AUC and pAUC (with domains: source AUC, "
        "target AUC and pAUC, a domain's AUC being its normal clips against all the section's anomalous ones). "
        f"{AMEAN}: the arithmetic mean over the machine ids (sections); pooled: over all the machine type's "
        "clips together. pAUC: false-positive rates up to 0.1, McClish-standardised as the DCASE evaluator "
        "prints it. Seconds: the method's whole run (fit and score every group); peak MB: the "
        "largest resident memory of its process" + (" (n/a: run in-process)" if not meta.get("isolated") else "") + ".",
        "",
    ]
    return "\n".join(lines)


CSV_COLUMNS = (
    "rank",
    "name",
    "method",
    "status",
    "official_score",
    "mean_auc",
    "mean_pauc",
    "mean_auc_source",
    "mean_auc_target",
    "seconds",
    "peak_rss_mb",
    "random_init",
    "label",
    "spec",
    "reason",
)


def write_report(out: str | Path, records: Sequence[dict], meta: dict) -> None:
    """``compare.md``, ``compare.csv`` (one row per method, a column per machine type's AUC and
    pAUC), ``compare.json`` (everything, with every method's rows) and ``compare.png``."""
    out = Path(out)
    recs = ranked(records)
    types = machine_types(recs)
    cols = [*CSV_COLUMNS, *[f"{t}_{k}" for t in types for k in ("auc", "pauc")]]

    def row(i, r):
        by = r.get("by_type") or {}
        base = {**r, "rank": i, "mean_auc_source": r.get("auc_source"), "mean_auc_target": r.get("auc_target")}
        base.update({f"{t}_{k}": (by.get(t) or {}).get(k) for t in types for k in ("auc", "pauc")})
        return ["" if base.get(c) is None else base.get(c) for c in cols]

    write_csv(out / "compare.csv", cols, (row(i, r) for i, r in enumerate(recs, start=1)))
    write_json(out / "compare.json", {**meta, "methods": [{**r, "rank": i} for i, r in enumerate(recs, start=1)]})
    write_text(out / "compare.md", render_markdown(recs, meta))
    if any(r["status"] == "ok" for r in recs):
        draw_figure(recs, meta, out / "compare.png")


def draw_figure(records: Sequence[dict], meta: dict, path: Path) -> Path:
    """AUC and pAUC, methods by machine type (and their mean): grouped bars for a few methods, a
    table of coloured, numbered cells (methods best first) for more, where bars would be too thin."""
    from humwatch.explain._plot import pyplot, save_figure

    plt = pyplot()
    recs = [r for r in ranked(records) if r["status"] == "ok"]
    groups = [*machine_types(recs), AMEAN]
    values = {key: [[_value(r, g, key) for g in groups] for r in recs] for key in ("auc", "pauc")}
    labels = [r["name"] + (" (RANDOM INIT)" if r.get("random_init") else "") for r in recs]
    title = meta.get("title", "humwatch compare")
    title = title if len(title) < 100 else title[:97] + "..."
    if len(recs) <= BARS_UP_TO:
        fig = _bars(plt, recs, groups, values, labels)
    else:
        fig = _cells(plt, groups, values, labels)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path, palette=False)


BARS_UP_TO = 5
"""Up to this many methods the figure is bars; more get a table of coloured cells."""
YLABEL = {"auc": "AUC", "pauc": "pAUC (FPR <= 0.1, McClish)"}


def _value(r: dict, group: str, key: str) -> float:
    v = r.get(f"mean_{key}") if group == AMEAN else ((r.get("by_type") or {}).get(group) or {}).get(key)
    return float("nan") if v is None else float(v)


def _bars(plt, recs, groups, values, labels):
    import numpy as np

    n = len(recs)
    width = 0.8 / n
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 2.0 + 1.3 * len(groups)), 7.5), sharex=True)
    cmap = plt.get_cmap("tab10")
    x = np.arange(len(groups))
    for ax, key in zip(axes, ("auc", "pauc")):
        for i, r in enumerate(recs):
            ax.bar(
                x - 0.4 + width * (i + 0.5),
                values[key][i],
                width,
                label=labels[i],
                color=cmap(i % 10),
                hatch="//" if r.get("random_init") else None,
                edgecolor="white",
                linewidth=0.5,
            )
        ax.axhline(0.5, color="0.4", linestyle="--", linewidth=1)
        ax.set_ylabel(YLABEL[key])
        ax.set_ylim(0.3, 1.0)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(groups, fontsize=11)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    return fig


def _cells(plt, groups, values, labels):
    import numpy as np

    n = len(labels)
    label_in = 0.085 * max(len(s) for s in labels)
    panel_in = 0.95 * len(groups)
    fig, axes = plt.subplots(
        1, 3, figsize=(label_in + 2.6 + 2 * panel_in, 1.4 + 0.38 * n), gridspec_kw={"width_ratios": [panel_in, panel_in, 0.18]}
    )
    for k, (ax, key) in enumerate(zip(axes[:2], ("auc", "pauc"))):
        V = np.array(values[key])
        im = ax.imshow(V, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
        for (i, j), v in np.ndenumerate(V):
            ax.text(
                j,
                i,
                "n/a" if np.isnan(v) else f"{v:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="black" if np.isnan(v) or 0.6 < v < 0.95 else "white",
            )
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=10)
        ax.xaxis.tick_top()
        ax.set_title(YLABEL[key], fontsize=11, pad=22)
        ax.set_yticks(range(n))
        ax.set_yticklabels([f"{i + 1}. {s}" for i, s in enumerate(labels)] if k == 0 else [], fontsize=10)
        ax.tick_params(length=0)
    fig.colorbar(im, cax=axes[2], label="0.5 = chance")
    return fig
