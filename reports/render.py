"""Write a report document as Markdown (PNG files beside it) and as one self-contained HTML file.

The HTML embeds every image as a base64 ``data:`` URI and carries its own
CSS, so it can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from bnnflow.files import atomic_write
from reports.tables import Cell, Table


@dataclass(frozen=True)
class Section:
    heading: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[Path, str]] = field(default_factory=list)  # (PNG in the output folder, caption)


@dataclass(frozen=True)
class Document:
    title: str
    intro: str
    sections: list[Section]


def fmt(v: Cell, column: str = "") -> str:
    """A cell as text: integers exact, other numbers to a readable precision, None as '–'."""
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    sign = "+" if column.startswith("Δ") and v > 0 else ""
    if "×" in column:
        return f"{v:.3f}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{sign}{int(v)}"
    return f"{sign}{v:.1f}" if abs(v) >= 100 else f"{sign}{v:.4g}"


# ---------------------------------------------------------------- markdown
def _md_table(t: Table) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [
        f"**{t.title}**",
        "",
        "| " + " | ".join(esc(c) for c in t.columns) + " |",
        "|" + "|".join("---:" if i >= t.numeric_from else "---" for i in range(len(t.columns))) + "|",
    ]
    for r in t.rows:
        lines.append("| " + " | ".join(esc(fmt(v, c)) for v, c in zip(r, t.columns, strict=True)) + " |")
    if t.note:
        lines += ["", f"_{t.note.strip()}_"]
    return "\n".join(lines)


def to_markdown(doc: Document, out_dir: Path) -> str:
    parts = [f"# {doc.title}", "", doc.intro]
    for s in doc.sections:
        parts += ["", f"## {s.heading}"]
        if s.text:
            parts += ["", s.text]
        for png, caption in s.images:
            parts += ["", f"![{caption}]({png.relative_to(out_dir).as_posix()})"]
        for t in s.tables:
            parts += ["", _md_table(t)]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- html
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px}th{background:#f0f0f0}
td.n{text-align:right;font-variant-numeric:tabular-nums}caption{font-weight:bold;text-align:left;padding:4px 0}
p.note{font-size:12px;color:#555;margin-top:-1em}img{max-width:100%;border:1px solid #eee;margin:.5em 0}
"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    for r in t.rows:
        cells = "".join(
            f"<td{' class=n' if i >= t.numeric_from else ''}>{html.escape(fmt(v, c))}</td>"
            for i, (v, c) in enumerate(zip(r, t.columns, strict=True))
        )
        body.append(f"<tr>{cells}</tr>")
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return (
        f"<table><caption>{html.escape(t.title)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>{note}"
    )


def to_html(doc: Document) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
        f"<p>{html.escape(doc.intro)}</p>",
    ]
    for s in doc.sections:
        parts.append(f"<h2>{html.escape(s.heading)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        for png, caption in s.images:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        parts += [_html_table(t) for t in s.tables]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(doc: Document, out_dir: Path, stem: str = "report") -> tuple[Path, Path]:
    """Write ``stem.md`` and ``stem.html`` into ``out_dir`` (the PNGs must already be there)."""
    md, page = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    atomic_write(md, to_markdown(doc, out_dir))
    atomic_write(page, to_html(doc))
    return md, page
