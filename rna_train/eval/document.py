"""The report document model: a list of blocks (headings, paragraphs, tables, figures) rendered as
Markdown (figures as PNG files beside it) and as one self-contained HTML page (figures base64-
embedded, no scripts). Every string is HTML-escaped in both. Used by ``rna report`` and by the
robustness suite's report.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class Block:
    """One report element: ``kind`` is h1, h2, p, table or figure."""

    kind: str
    text: str = ""
    headers: Sequence[str] = ()
    rows: Sequence[Sequence[str]] = ()
    png: bytes = b""
    name: str = ""


def _md_text(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block], figure_dir: str) -> str:
    """Markdown for ``blocks``; figures reference ``figure_dir/<name>.png``."""
    out = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {_md_text(b.text)}")
        elif b.kind == "h2":
            out.append(f"## {_md_text(b.text)}")
        elif b.kind == "p":
            out.append(_md_text(b.text))
        elif b.kind == "table":
            out.append("| " + " | ".join(_md_text(h) for h in b.headers) + " |")
            out.append("|" + "---|" * len(b.headers))
            out.extend("| " + " | ".join(_md_text(c) for c in row) + " |" for row in b.rows)
        elif b.kind == "figure":
            out.append(f"![{_md_text(b.text)}]({figure_dir}/{b.name}.png)")
        out.append("")
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:left}th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}"
        "figcaption{color:#555;font-size:.9em}")


def render_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained HTML page (inline CSS, base64 PNG figures, no scripts)."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "p"):
            parts.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "figure":
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(f'<figure id="fig-{esc(b.name)}"><img alt="{esc(b.text)}" '
                         f'src="data:image/png;base64,{data}"><figcaption>{esc(b.text)}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts)


def legend_outside(ax: Any, fontsize: int) -> None:
    """The legend to the right of the axes, so a dozen runs' entries never cover the curves."""
    ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def interval_cell(stat: Any) -> str:
    """``mean [low, high]`` (3 decimals) of a ``{mean, low, high}`` statistic; ``mean`` alone when the
    interval is missing or not finite; ``-`` when there is no statistic."""
    import math

    if not stat or stat.get("mean") is None or not math.isfinite(float(stat["mean"])):
        return "-"
    low, high = stat.get("low"), stat.get("high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{low:.3f}, {high:.3f}]"


def write_document(blocks: Sequence[Block], out_dir: str | Path, title: str, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.md`` (+ ``figures/*.png``) and the self-contained ``<stem>.html`` to ``out_dir``."""
    out = Path(out_dir)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for b in blocks:
        if b.kind == "figure":
            (figures / f"{b.name}.png").write_bytes(b.png)
    md = out / f"{stem}.md"
    md.write_text(render_markdown(blocks, "figures"), encoding="utf-8")
    page = out / f"{stem}.html"
    page.write_text(render_html(blocks, title), encoding="utf-8")
    return md, page
