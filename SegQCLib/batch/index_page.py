"""The batch ranking as a static web page, ``index.html``: one row per case, worst first, with its thumbnails.

The page has no script and no external resource: it opens from a file system, a web server or an archive.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from ..files import write_text_atomic
from .results import CaseStatus, RankRow, rank_numbers

INDEX_FILE = "index.html"


def _number(value: Optional[float]) -> str:
    return "&ndash;" if value is None else f"{value:.3f}"


def _row_html(row: RankRow, rank: Optional[int]) -> str:
    case = html.escape(row.case_id)
    name = f'<a href="{html.escape(row.report, quote=True)}">{case}</a>' if row.report else case
    images = "".join(
        f'<figure><img src="{html.escape(src, quote=True)}" alt="{case} slice {index}" loading="eager">'
        f"<figcaption>slice {index}</figcaption></figure>" for src, index in row.thumbnails)
    if row.status is CaseStatus.FAILED:
        return (f'<tr class="failed"><td></td><td>{case}</td><td colspan="6">failed: {html.escape(row.error or "")}'
                "</td><td></td></tr>")
    return (f'<tr class="{row.status.value}"><td>{rank}</td><td>{name}</td><td>{_number(row.dice_est)}</td>'
            f"<td>{_number(row.dice_pred)}</td><td>{_number(row.qi)}</td><td>{row.n_boxes}</td>"
            f"<td>{'&ndash;' if row.worst_slice is None else row.worst_slice}</td><td>{row.status.value}</td>"
            f'<td class="thumbs">{images}</td></tr>')


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; vertical-align: middle; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr.failed td { color: #a00; }
td.thumbs { white-space: nowrap; }
.thumbs figure { display: inline-block; margin: 0 6px 0 0; vertical-align: top; }
.thumbs img { display: block; image-rendering: pixelated; }
figcaption { font-size: 0.8em; color: #666; }
.legend span { display: inline-block; margin-right: 1.5em; }
"""


def write_index_html(rows: Sequence[RankRow], out_dir: Path, title: str = "SegQC ranking",
                     notes: Sequence[str] = ()) -> Path:
    """Write ``index.html`` (atomically) listing ``rows`` in the given order (ranked rows numbered 1, 2, ...).

    Report and thumbnail paths in the rows are relative to ``out_dir``."""
    failed = sum(r.status is CaseStatus.FAILED for r in rows)
    body = "\n".join(_row_html(r, rank) for r, rank in zip(rows, rank_numbers(rows)))
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(rows) - failed} case(s) ranked worst first by estimated Dice{f", {failed} failed" if failed else ""}.</p>
<p class="legend"><span>red: predicted error probability</span><span>outlines: segmentation classes</span>
<span>yellow: error boxes</span></p>
{notes_html}
<table>
<thead><tr><th>#</th><th>case</th><th>est. Dice</th><th>pred. Dice</th><th>QI</th><th>boxes</th><th>worst slice</th>
<th>status</th><th>worst slices</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
</body>
</html>
"""
    return write_text_atomic(out_dir / INDEX_FILE, page)
