"""Write one comparison table (+ figures and notes) as Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanvision._io import atomic_write_text


@dataclass(frozen=True)
class Column:
    """A table column: record key, header, and how to format a value (missing values show as '-')."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        return "-" if value is None else self.fmt(value)


def _markdown(title: str, intro: str, rows, columns, figures, notes) -> str:
    lines = [f"# {title}", "", intro, ""] if intro else [f"# {title}", ""]
    esc = lambda text: text.replace("|", "\\|")  # noqa: E731  (a bare | in a cell would end it: empty columns)
    lines.append("| " + " | ".join(esc(c.header) for c in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(esc(c.cell(r)) for c in columns) + " |" for r in rows]
    lines.append("")
    lines += [f"![{fig.stem}]({fig.name})\n" for fig in figures]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _html(title: str, intro: str, rows, columns, figures, notes) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c.header)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(c.cell(r))}</td>" for c in columns) + "</tr>" for r in rows)
    imgs = "".join(
        f'<figure><img alt="{esc(f.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(f.read_bytes()).decode()}"></figure>'
        for f in figures
    )
    note_html = ("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>") if notes else ""
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;"
        "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{style}</style></head><body><h1>{esc(title)}</h1><p>{esc(intro)}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{imgs}{note_html}</body></html>\n"
    )


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    figures: Sequence[str | Path] = (),
    notes: Sequence[str] = (),
    intro: str = "",
    stem: str = "report",
) -> tuple[Path, Path]:
    """Write ``<stem>.md`` (figures linked) and ``<stem>.html`` (figures embedded); return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = [Path(f) for f in figures]
    md_path, html_path = out / f"{stem}.md", out / f"{stem}.html"
    atomic_write_text(md_path, _markdown(title, intro, rows, columns, figs, notes))
    atomic_write_text(html_path, _html(title, intro, rows, columns, figs, notes))
    return html_path, md_path
