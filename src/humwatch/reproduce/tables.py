"""Table III as files: ``table3.md``, ``table3.csv`` and ``table3.json``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from humwatch.io import write_csv, write_json, write_text
from humwatch.metrics import FEW_CLIPS
from humwatch.models.weights import random_init_warning
from humwatch.reproduce.config import PUBLISHED, SYNTHETIC_NOTE

# ------------------------------------------------------------------------------------ the table


@dataclass
class Table3:
    """The outcome of :func:`reproduce`: every selected cell and where the tables are."""

    cells: list[dict]
    out: Path
    meta: dict

    @property
    def failed(self) -> list[dict]:
        return [c for c in self.cells if c["status"] != "ok"]

    def cell(self, row: str, column: str) -> dict:
        for c in self.cells:
            if c["row"] == row and c["column"] == column:
                return c
        raise KeyError(f"{row}/{column}")


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def render_markdown(records: Sequence[dict], meta: dict) -> str:
    """The table as Markdown: a grid of ours / published (difference) and a line per cell."""
    rows = list(dict.fromkeys(r["row"] for r in records))
    cols = list(dict.fromkeys(r["column"] for r in records))
    by = {(r["row"], r["column"]): r for r in records}
    lines = [f"# {meta.get('title', 'Table III')}", ""]
    if meta.get("synthetic"):
        lines += [f"**{SYNTHETIC_NOTE}.**", ""]
    rand = sorted({r["row"] for r in records if r.get("random_init")})
    if rand and not meta.get("synthetic"):
        lines += [f"**{random_init_warning(', '.join(rand))}**", ""]
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += [f"**{len(failed)} cell(s) failed** (run again to retry them; finished cells are kept).", ""]
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    lines += [
        f"- data: {meta.get('data')}",
        f"- config: {meta.get('config_source')}; seed {meta.get('seed')}; precision {meta.get('precision')}",
        f"- machine: {machine.get('cpu')} ({machine.get('cores')} cores, torch threads {meta.get('torch_threads')}), {machine.get('platform')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"- total seconds: {meta.get('seconds', 'n/a')}",
        "",
        "Each cell: our AUC / published AUC (difference = ours - published). LOF rows give two readings of the "
        "study's detector: the AUC of the continuous LOF score (first), and after `votes` the AUC of the vote count, "
        "the study's literal reading (four LOFs with contaminations 0.1-0.4 each predict 0/1, the votes are counted, "
        "then the AUC is taken).",
        "",
        "| row | " + " | ".join(cols) + " |",
        "| --- |" + " --- |" * len(cols),
    ]
    for row in rows:
        cells = []
        for col in cols:
            r = by.get((row, col))
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(f"failed / {_fmt(r['published'])}")
            else:
                text = f"{_fmt(r['auc'])} / {_fmt(r['published'])} ({_fmt(r['difference'], True)})"
                if r.get("auc_votes") is not None:
                    text += f"; votes {_fmt(r['auc_votes'])}"
                cells.append(text)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Cells",
        "",
        "| row | column | status | AUC | AUC 95% CI | AUC (votes) | published | difference | test normal | "
        "test anomalous | trainable parameters | weights | seed | seconds | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        weights = r.get("weights") or ""
        lines.append(
            f"| {r['row']} | {r['column']} | {r['status']} | {_fmt(r['auc'])} | {_interval(r.get('auc_ci'))} | "
            f"{_fmt(r['auc_votes']) if r.get('auc_votes') is not None else ''} | {_fmt(r['published'])} | "
            f"{_fmt(r['difference'], True)} | {_blank(r.get('n_normal'))} | {_blank(r.get('n_anomalous'))} | "
            f"{_params(r)} | {_md(weights)} | {r['seed']} | {r['seconds']} | {_md(r.get('reason') or '')} |"
        )
    few = [
        f"{r['row']}/{r['column']}"
        for r in records
        if r["status"] == "ok" and min(r.get("n_normal") or 0, r.get("n_anomalous") or 0) < FEW_CLIPS
    ]
    if few:
        lines += [
            "",
            f"**Few clips**: {', '.join(few)} rest on fewer than {FEW_CLIPS} test clips of a class; read their AUC with its 95 % interval.",
        ]
    return "\n".join(lines) + "\n"


def _interval(ci) -> str:
    if not ci or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in ci):
        return ""
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def _blank(v: Any) -> str:
    return "" if v is None else str(v)


def _params(r: dict) -> str:
    """``"1,234 of 86,742,000"`` for fine-tuned cells."""
    if r.get("trainable_params") is None:
        return ""
    return f"{r['trainable_params']:,} of {r['total_params']:,}" if r.get("total_params") else f"{r['trainable_params']:,}"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


CSV_COLUMNS = (
    "row",
    "column",
    "status",
    "auc",
    "auc_low",
    "auc_high",
    "published",
    "difference",
    "pauc",
    "auc_votes",
    "pauc_votes",
    "n_normal",
    "n_anomalous",
    "trainable_params",
    "total_params",
    "weights",
    "random_init",
    "seed",
    "seconds",
    "reason",
)


def write_tables(out: Path, records: Sequence[dict], meta: dict) -> None:
    """``table3.md``, ``table3.csv`` and ``table3.json`` (each written atomically)."""
    out = Path(out)

    def cell(v: Any) -> Any:
        if isinstance(v, float):
            return f"{v:.6f}"
        return "" if v is None else v

    def flat(r: dict) -> dict:
        ci = r.get("auc_ci") or [None, None]
        return {**r, "auc_low": ci[0], "auc_high": ci[1]}

    write_csv(out / "table3.csv", CSV_COLUMNS, ([cell(flat(r).get(k)) for k in CSV_COLUMNS] for r in records))
    clean = [{k: v for k, v in r.items() if k != "reused"} for r in records]
    write_json(out / "table3.json", {**meta, "published": PUBLISHED, "cells": clean})
    write_text(out / "table3.md", render_markdown(records, meta))
