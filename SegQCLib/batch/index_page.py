"""The batch ranking as a static web page, ``index.html``: one row per case, worst first, with its worst slices,
linking to each case's review page.

The table can be sorted (click a column header) and filtered in the browser (case name, estimated Dice of the
case or of one class below a value, flag, review status) by a small inline script; without scripts the page is
the plain ranked table.  No external resource: it opens from a file system, a web server or an archive.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from ..files import write_text_atomic
from ..review import explanations
from ..review.flags import CaseFlag
from ..review.pictures import class_color_hex
from .results import CaseStatus, RankRow, class_labels, rank_numbers
from .review_status import CaseReview, ReviewStatus

INDEX_FILE = "index.html"


def _number(value: Optional[float]) -> str:
    return "&ndash;" if value is None else f"{value:.3f}"


def _domain_reasons_html(row: RankRow) -> str:
    if row.in_domain is not False:
        return ""
    reasons = "".join(f"<li>{html.escape(reason)}</li>" for reason in row.domain_reasons)
    return (f'<br><strong class="warning">OUTSIDE the model\'s domain: estimates unreliable</strong>'
            f'<ul class="reasons">{reasons}</ul>')


def _data(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.6g}"


def _swatch(label: int) -> str:
    return f'<span class="swatch" style="background:{class_color_hex(label)}"></span>'


def _row_html(row: RankRow, rank: Optional[int], labels: Sequence[int], review: Optional[CaseReview]) -> str:
    case = html.escape(row.case_id)
    status = review.status.value if review else ReviewStatus.PENDING.value
    if row.status is CaseStatus.FAILED:
        return (f'<tr class="failed" data-case="{case}" data-flags="{CaseFlag.FAILED.value}" data-review="{status}">'
                f'<td></td><td>{case}</td><td colspan="{6 + len(labels)}">failed: {html.escape(row.error or "")}</td>'
                f"<td>{status}</td><td></td></tr>")
    target = row.page or row.report
    name = f'<a href="{html.escape(target, quote=True)}">{case}</a>' if target else case
    images = "".join(
        f'<figure><img src="{html.escape(src, quote=True)}" alt="{case} slice {index}" loading="eager">'
        f"<figcaption>slice {index}</figcaption></figure>" for src, index in row.thumbnails)
    class_cells = "".join(f'<td class="num">{_number(row.class_dice.get(label))}</td>' for label in labels)
    class_data = "".join(f' data-class-{label}="{_data(row.class_dice.get(label))}"' for label in labels)
    flags = " ".join(row.flags)
    flag_html = " ".join(f'<span class="flag" title="{html.escape(CaseFlag(f).description, quote=True)}">'
                         f"{html.escape(f)}</span>" for f in row.flags)
    classes = row.status.value + (" out-of-domain" if row.in_domain is False else "")
    return (f'<tr class="{classes}" data-rank="{rank}" data-case="{case}" '
            f'data-dice-est="{_data(row.dice_est)}" data-dice-pred="{_data(row.dice_pred)}" data-qi="{_data(row.qi)}" '
            f'data-boxes="{row.n_boxes or 0}" data-worst="{"" if row.worst_slice is None else row.worst_slice}"'
            f'{class_data} data-flags="{flags}" data-review="{status}">'
            f'<td class="num">{rank}</td><td>{name}</td><td class="num">{_number(row.dice_est)}</td>'
            f'<td class="num">{_number(row.dice_pred)}</td><td class="num">{_number(row.qi)}</td>{class_cells}'
            f'<td class="num">{row.n_boxes}</td>'
            f'<td class="num">{"&ndash;" if row.worst_slice is None else row.worst_slice}</td>'
            f"<td>{flag_html}{_domain_reasons_html(row)}</td><td>{status}</td><td class=\"thumbs\">{images}</td></tr>")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; vertical-align: middle; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
th[data-sort] { cursor: pointer; }
th[data-sort]::after { content: " \\2195"; color: #999; }
th.asc::after { content: " \\2191"; color: #222; }
th.desc::after { content: " \\2193"; color: #222; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { color: #a00; }
td.thumbs { white-space: nowrap; }
.thumbs figure { display: inline-block; margin: 0 6px 0 0; vertical-align: top; }
.thumbs img { display: block; height: 140px; image-rendering: pixelated; }
figcaption { font-size: 0.8em; color: #666; }
.swatch { display: inline-block; width: 14px; height: 14px; margin-right: 6px; vertical-align: -2px;
          border: 1px solid #333; }
.legend { background: #fafafa; border: 1px solid #ddd; padding: 0.3em 1em; margin: 0.5em 0; }
.legend ul { list-style: none; padding: 0; margin: 0.3em 0; }
.legend li { display: inline-block; margin-right: 2em; }
.flag { background: #fff3cd; border: 1px solid #e0b100; border-radius: 3px; padding: 0 4px; font-size: 0.85em; }
.controls { display: flex; flex-wrap: wrap; gap: 1em; align-items: end; margin: 0.8em 0; }
.controls label { display: flex; flex-direction: column; font-size: 0.85em; }
dl.explain { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; font-size: 0.9em; }
dl.explain dt { font-weight: bold; }
dl.explain dd { margin: 0; }
tr.out-of-domain td { background: #fff3cd; }
.reasons { margin: 0.2em 0 0 1em; padding: 0; font-size: 0.85em; max-width: 28em; }
p.warning, strong.warning { color: #a00; font-weight: bold; }
"""

# Sorting and filtering; every value it reads is in the rows' data- attributes.
_SCRIPT = """
(function () {
  const table = document.getElementById('ranking');
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const control = (id) => document.getElementById(id);
  const number = (text) => (text === undefined || text === '' ? null : Number(text));
  function diceOf(row) {
    const which = control('filter-class').value;
    return number(which === 'case' ? row.dataset.diceEst : row.dataset['class-' + which]);
  }
  function apply() {
    const name = control('filter-name').value.trim().toLowerCase();
    const below = control('filter-dice').value === '' ? null : Number(control('filter-dice').value);
    const flag = control('filter-flag').value;
    const review = control('filter-review').value;
    let shown = 0;
    for (const row of rows) {
      const flags = (row.dataset.flags || '').split(' ').filter(Boolean);
      let visible = !name || row.dataset.case.toLowerCase().includes(name);
      if (visible && below !== null) {
        const dice = diceOf(row);
        visible = dice !== null && dice <= below;
      }
      if (visible && flag === 'none') visible = flags.length === 0;
      else if (visible && flag !== 'any') visible = flags.includes(flag);
      if (visible && review !== 'any') visible = row.dataset.review === review;
      row.hidden = !visible;
      if (visible) shown += 1;
    }
    control('shown').textContent = shown + ' of ' + rows.length + ' case(s) shown';
  }
  function sortBy(header) {
    const key = header.dataset.sort;
    const ascending = !header.classList.contains('asc');
    for (const other of table.tHead.rows[0].cells) other.classList.remove('asc', 'desc');
    header.classList.add(ascending ? 'asc' : 'desc');
    const value = (row) => (key === 'case' ? row.dataset.case : number(row.dataset[key]));
    const ordered = rows.slice().sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === null && y === null) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      const order = key === 'case' ? x.localeCompare(y) : x - y;
      return ascending ? order : -order;
    });
    for (const row of ordered) body.appendChild(row);
  }
  for (const header of table.tHead.rows[0].cells) {
    if (header.dataset.sort) header.addEventListener('click', () => sortBy(header));
  }
  for (const id of ['filter-name', 'filter-class', 'filter-dice', 'filter-flag', 'filter-review']) {
    control(id).addEventListener('input', apply);
    control(id).addEventListener('change', apply);
  }
  apply();
})();
"""


def write_index_html(rows: Sequence[RankRow], out_dir: Path, title: str = "SegQC ranking",
                     notes: Sequence[str] = (), reviews: Optional[Mapping[str, CaseReview]] = None) -> Path:
    """Write ``index.html`` (atomically) listing ``rows`` in the given order (ranked rows numbered 1, 2, ...).

    Report, page and thumbnail paths in the rows are relative to ``out_dir``; ``reviews`` are the review statuses
    (``review_status.csv``)."""
    reviews = reviews or {}
    failed = sum(r.status is CaseStatus.FAILED for r in rows)
    labels = class_labels(rows)
    names = {label: name for row in rows for label, name in row.class_names.items()}
    body = "\n".join(_row_html(r, rank, labels, reviews.get(r.case_id)) for r, rank in zip(rows, rank_numbers(rows)))
    outside = sum(r.in_domain is False for r in rows)
    outside_html = (f'<p class="warning">{outside} case(s) are outside the model\'s domain (highlighted, listed after '
                    "the others): their estimates are unreliable.</p>" if outside else "")
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    class_headers = "".join(f'<th data-sort="class-{label}">{_swatch(label)}{html.escape(names.get(label, str(label)))}'
                            "<br>est. Dice</th>" for label in labels)
    class_options = "".join(f'<option value="{label}">class {label} {html.escape(names.get(label, ""))}</option>'
                            for label in labels)
    flag_options = "".join(f'<option value="{f.value}">{f.value}</option>' for f in CaseFlag)
    review_options = "".join(f'<option value="{s.value}">{s.value}</option>' for s in ReviewStatus)
    legend = "".join(f"<li>{_swatch(label)}class {label} {html.escape(names.get(label, ''))}</li>" for label in labels)
    flag_help = "".join(f"<dt>{f.value}</dt><dd>{html.escape(f.description)}</dd>" for f in CaseFlag)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(rows) - failed} case(s) ranked worst first by estimated Dice{f", {failed} failed" if failed else ""}.
Click a case for its review page (pictures in three orientations, what each estimate means, how to open it in
3D Slicer); click a column header to sort.</p>
{outside_html}
{notes_html}
<dl class="explain">
<dt>est. Dice</dt><dd>{html.escape(explanations.DICE_EST)}</dd>
<dt>pred. Dice</dt><dd>{html.escape(explanations.DICE_PRED)}</dd>
<dt>QI</dt><dd>{html.escape(explanations.QI)}</dd>
<dt>worst slice</dt><dd>{html.escape(explanations.WORST_SLICE)}</dd>
{flag_help}
</dl>
<div class="legend" id="legend"><ul>{legend}</ul>
<p>Pictures: in each class's colour, outline = the segmentation checked, translucent fill = predicted error
probability, rectangle = error box. Radiological convention (the patient's right on your left).</p></div>
<div class="controls">
<label>case name <input id="filter-name" type="search" placeholder="part of a name"></label>
<label>Dice of <select id="filter-class"><option value="case">the case</option>{class_options}</select></label>
<label>est. Dice at most <input id="filter-dice" type="number" min="0" max="1" step="0.01" placeholder="any"></label>
<label>flag <select id="filter-flag"><option value="any">any</option><option value="none">no flag</option>
{flag_options}</select></label>
<label>review <select id="filter-review"><option value="any">any</option>{review_options}</select></label>
<span id="shown"></span>
</div>
<table id="ranking">
<thead><tr><th data-sort="rank">#</th><th data-sort="case">case</th><th data-sort="diceEst">est. Dice</th>
<th data-sort="dicePred">pred. Dice</th><th data-sort="qi">QI</th>{class_headers}<th data-sort="boxes">boxes</th>
<th data-sort="worst">worst slice</th><th>flags</th><th>review</th><th>worst slices</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
<script>{_SCRIPT}</script>
</body>
</html>
"""
    return write_text_atomic(out_dir / INDEX_FILE, page)

