"""One self-contained HTML page for a run: its tables, its figures and a sentence on each.

The page opens from disk with no server and no network: the figures are embedded as base64
``data:`` URIs (and linked by their relative file names beside the page), the style sheet is
inline, there is no script. Markdown tables (``results.md``, ``table3.md``) are converted by the
small converter here (headings, pipe tables, lists, paragraphs, ``**bold**`` and ``code``).
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from humwatch.errors import ConfigError
from humwatch.io import write_text
from humwatch.models.weights import random_init_warning
from humwatch.rundir import RunDir

REPORT_NAME = "report.html"


@dataclass
class Figure:
    """A PNG and the sentence that says what it shows."""

    file: str | Path
    caption: str
    title: str = ""


@dataclass
class Section:
    """A part of the report. ``text`` is plain text (escaped; blank lines split paragraphs),
    ``markdown`` is converted, ``html`` is inserted as it is (trusted, built by humwatch)."""

    title: str
    text: str = ""
    markdown: str = ""
    html: str = ""
    figures: list[Figure] = field(default_factory=list)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}
h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #bbb;padding:.25em .6em}
th{background:#eee}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.92em;color:#333;margin-top:.3em}
.banner{background:#fde2e2;border:2px solid #c00;color:#900;padding:.6em 1em;font-weight:bold}
.note{color:#555;font-size:.9em}
code{background:#f4f4f4;padding:0 .2em}
"""


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _inline(text: str) -> str:
    """Escape, then ``**bold**`` and ``code``."""
    out = _esc(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return s.strip().lower() in ("nan", "n/a")


def _table_html(lines: list[str]) -> str:
    def cells(line: str) -> list[str]:
        line = line.strip()
        if line.startswith("|"):
            line = line[1:]
        if line.endswith("|"):
            line = line[:-1]
        return [c.strip() for c in line.split("|")]

    head = cells(lines[0])
    body = lines[1:]
    if body and re.fullmatch(r"[\s|:\-]+", body[0]):
        body = body[1:]
    parts = ["<table>", "<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>", "<tbody>"]
    for line in body:
        row = cells(line)
        parts.append(
            "<tr>" + "".join(f'<td class="num">{_inline(c)}</td>' if _is_number(c) else f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
        )
    parts.append("</tbody></table>")
    return "\n".join(parts)


def markdown_to_html(md: str, heading_offset: int = 2) -> str:
    """A small Markdown subset as HTML: ``#`` headings (shifted by ``heading_offset`` levels),
    pipe tables, ``-``/``*`` lists, paragraphs, ``**bold**`` and ``code``. Everything is escaped."""
    out: list[str] = []
    lines = md.replace("\r\n", "\n").split("\n")
    i = 0
    para: list[str] = []

    def flush_para():
        if para:
            out.append("<p>" + " ".join(_inline(p) for p in para) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if not s:
            flush_para()
            i += 1
        elif m := re.match(r"^(#{1,6})\s+(.*)$", s):
            flush_para()
            level = min(6, len(m.group(1)) + heading_offset)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif s.startswith("|"):
            flush_para()
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table_html(block))
        elif re.match(r"^[-*]\s+", s):
            flush_para()
            items = []
            while i < len(lines) and re.match(r"^[-*]\s+", lines[i].strip()):
                items.append(re.sub(r"^[-*]\s+", "", lines[i].strip()))
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
        else:
            para.append(s)
            i += 1
    flush_para()
    return "\n".join(out)


def _text_html(text: str) -> str:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n".join(f"<p>{_esc(p)}</p>" for p in paras)


def _figure_html(fig: Figure, out_dir: Path, embed: bool) -> str:
    path = Path(fig.file)
    if not path.is_absolute():
        path = out_dir / path
    if not path.is_file():
        raise ConfigError(f"{path}: figure file not found")
    rel = Path(os.path.relpath(path, out_dir)).as_posix()
    if embed:
        src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    else:
        src = rel
    alt = fig.title or path.stem
    title = f"<strong>{_esc(fig.title)}.</strong> " if fig.title else ""
    return (
        f'<figure><a href="{_esc(rel)}"><img src="{src}" alt="{_esc(alt)}" data-file="{_esc(rel)}"></a>'
        f'<figcaption>{title}{_esc(fig.caption)} <span class="note">({_esc(rel)})</span></figcaption></figure>'
    )


def render_report(
    out_dir: str | Path, sections: Sequence[Section], title: str = "humwatch report", banner: str = "", embed: bool = True
) -> str:
    """The report page as a string (figures relative to ``out_dir``)."""
    out_dir = Path(out_dir)
    body = [f"<h1>{_esc(title)}</h1>"]
    if banner:
        body.append(f'<div class="banner">{_esc(banner)}</div>')
    for s in sections:
        body.append(f"<section><h2>{_esc(s.title)}</h2>")
        if s.text:
            body.append(_text_html(s.text))
        if s.markdown:
            body.append(markdown_to_html(s.markdown))
        if s.html:
            body.append(s.html)
        for f in s.figures:
            body.append(_figure_html(f, out_dir, embed))
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def write_report(
    out_dir: str | Path,
    sections: Sequence[Section],
    title: str = "humwatch report",
    banner: str = "",
    embed: bool = True,
    filename: str = REPORT_NAME,
) -> Path:
    """Write ``out_dir/report.html`` (whole or not at all) and return its path.

    Figures may be given relative to ``out_dir`` or as absolute paths; each must exist.
    ``embed=False`` links the PNGs by relative path instead of embedding them (a smaller page that
    needs the files beside it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = render_report(out_dir, sections, title, banner, embed)
    path = out_dir / filename
    write_text(path, page)
    return path


# ----------------------------------------------------------------------------- a run's tables


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if v != v else f"{v:.4f}"
    return str(v)


def results_table_html(results: dict) -> str:
    """An HTML table of a ``results.json``'s rows."""
    rows = results.get("rows") or []
    cols = ["machine_type", "machine_id", "auc", "pauc", "n_normal", "n_anomalous"]
    head = ["machine type", "id", "AUC", "pAUC", "normal", "anomalous"]
    parts = ["<table>", "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>", "<tbody>"]
    for r in rows:
        parts.append(
            "<tr>"
            + "".join(
                f'<td class="num">{_esc(_fmt(r.get(c, "")))}</td>'
                if c not in ("machine_type", "machine_id")
                else f"<td>{_esc(r.get(c, ''))}</td>"
                for c in cols
            )
            + "</tr>"
        )
    parts.append("</tbody></table>")
    return "\n".join(parts)


def run_table_section(run_dir: str | Path, title: str | None = None) -> Section | None:
    """The section for one run directory's table: ``results.md`` (or ``results.json``)."""
    run_dir = Path(run_dir)
    md = run_dir / RunDir.RESULTS_MD
    results = RunDir(run_dir).results()
    name = title or f"Results: {results.get('label') or run_dir.name}"
    if md.is_file():
        return Section(name, text=f"From {run_dir.name}/results.md.", markdown=md.read_text(encoding="utf-8"))
    if results:
        extra = []
        if results.get("random_init"):
            extra.append(random_init_warning())
        if results.get("weights"):
            extra.append(f"weights: {results['weights']}")
        return Section(name, text="\n\n".join([f"From {run_dir.name}/results.json.", *extra]), html=results_table_html(results))
    return None


def table_sections(run_dir: str | Path) -> list[Section]:
    """Tables of ``run_dir``: a reproduce directory's ``table3.md`` (its per-cell tables stay in
    their run directories), else the run's own results and those of the runs one level below."""
    run_dir = Path(run_dir)
    sections: list[Section] = []
    t3 = run_dir / "table3.md"
    if t3.is_file():
        sections.append(
            Section(
                "Table III",
                text="The study's comparison table as reproduced (table3.md); each cell's own results are in runs/<row>__<column>/results.md.",
                markdown=t3.read_text(encoding="utf-8"),
            )
        )
        s = run_table_section(run_dir) if RunDir.is_run(run_dir) else None
        return sections + ([s] if s else [])
    for rd in RunDir.find(run_dir, depth=1):
        s = run_table_section(rd.path)
        if s is not None:
            sections.append(s)
    return sections
