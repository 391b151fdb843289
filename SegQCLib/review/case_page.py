"""One case's review page (``review.html``): what an annotator needs to judge and fix the case.

The page is static (no server, no external resource, no script): its pictures sit in a folder beside it and every
link is relative, so the output folder can be moved, archived or served.  It shows the flags (and the domain
check's verdict when the report has one), the estimates with one line each on what they mean and what to trust
them for, the per-class table, the worst location in three anatomical orientations and the worst slices with
orientation labels and a colour legend, the error boxes, the report's notices, and the exact way to open the case
in 3D Slicer.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..files import write_text_atomic
from ..quality.report import Report
from . import explanations
from .flags import CaseFlag, domain_of
from .orientation import Orientation
from .pictures import Picture, class_color_hex
from .slicer_script import shell_quote

PAGE_FILE = "review.html"
MAX_BOXES_LISTED = 25


@dataclass
class PageContext:
    """Where the page sits among others (all optional: ``segqc run --html`` has none of it)."""

    rank: Optional[int] = None
    total: Optional[int] = None
    index_href: Optional[str] = None  # the ranking page, relative to this page
    review_status: Optional[str] = None
    flags: Sequence[CaseFlag] = ()
    slicer_script: Optional[Path] = None
    files: dict[str, str] = field(default_factory=dict)  # what -> absolute path, listed for drag and drop


def _number(value: Optional[float], digits: int = 3) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def _rel(path: Path, page_dir: Path) -> str:
    return html.escape(Path(os.path.relpath(Path(path).resolve(), page_dir)).as_posix(), quote=True)


def _swatch(label: int) -> str:
    return f'<span class="swatch" style="background:{class_color_hex(label)}"></span>'


def _figure(picture: Picture, page_dir: Path, caption: str) -> str:
    labels = "".join(f'<span class="orient {edge}">{letter}</span>'
                     for edge, letter in picture.view.edge_labels.items())
    return (f'<figure class="view"><div class="frame"><img src="{_rel(picture.path, page_dir)}" '
            f'alt="{html.escape(caption, quote=True)}">{labels}</div><figcaption>{html.escape(caption)}'
            "</figcaption></figure>")


def _flags_html(report: Report, context: PageContext) -> str:
    parts = []
    domain = domain_of(report)
    if domain is not None and domain.get("in_domain") is False:
        reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in domain.get("reasons") or [])
        parts.append('<div class="banner" id="out-of-domain"><strong>Out of the model\'s domain:</strong> '
                     f"{html.escape(CaseFlag.OUT_OF_DOMAIN.description)}.<ul>{reasons}</ul></div>")
    others = [f for f in context.flags if f is not CaseFlag.OUT_OF_DOMAIN]
    if others:
        parts.append('<ul class="flags">' + "".join(
            f'<li><span class="flag">{html.escape(f.value)}</span> {html.escape(f.description)}</li>' for f in others)
            + "</ul>")
    return "\n".join(parts)


def _domain_html(report: Report) -> str:
    domain = domain_of(report)
    if domain is None:
        return ""
    verdict = {True: "in the model's domain", False: "out of the model's domain"}.get(domain.get("in_domain"),
                                                                                       "unknown")
    score = domain.get("score")
    reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in domain.get("reasons") or [])
    return (f'<section id="domain"><h2>Domain check</h2><p>Input {html.escape(verdict)}'
            f'{"" if score is None else f" (score {float(score):.3f})"}.</p><ul>{reasons}</ul></section>')


def _estimates_html(report: Report, orientation: Orientation) -> str:
    case = report.case
    worst = next((s for s in report.slices if s.error_score > 0), None)
    view = orientation.view_of_array_axis(report.slice_axis)
    rows = [("Estimated Dice", _number(case.dice_est), explanations.DICE_EST),
            ("Predicted Dice", _number(case.dice_pred), explanations.DICE_PRED)]
    if case.nsd_pred is not None:
        rows.append(("Predicted NSD", _number(case.nsd_pred), explanations.NSD_PRED))
    rows += [("QI", _number(case.qi), explanations.QI),
             ("Worst slice", "none" if worst is None else f"{worst.index} (error {worst.error_score:.1f})",
              explanations.WORST_SLICE),
             ("Slice axis", f"{report.slice_axis} ({view.value})", explanations.slice_axis(report.slice_axis, view)),
             ("Error boxes", str(len(report.boxes)), explanations.BOXES)]
    body = "".join(f'<tr><th scope="row">{name}</th><td class="num">{value}</td><td>{html.escape(text)}</td></tr>'
                   for name, value, text in rows)
    return (f'<section id="estimates"><h2>Estimates</h2><table class="estimates">{body}</table>'
            f'<p class="caveat">{html.escape(explanations.CAVEAT)}</p></section>')


def _classes_html(report: Report) -> str:
    body = "".join(
        f"<tr><td>{_swatch(c.label)}{c.label} {html.escape(c.name)}</td><td class='num'>{_number(c.dice_est)}</td>"
        f"<td class='num'>{_number(c.iou_est)}</td><td class='num'>{_number(c.arvd_est)}</td>"
        f"<td class='num'>{_number(c.volume_mm3, 0)}</td><td class='num'>{_number(c.volume_est_mm3, 0)}</td>"
        f"<td class='num'>{_number(c.error_volume_mm3, 0)}</td></tr>" for c in report.classes)
    return ('<section id="classes"><h2>Per class</h2>'
            f"<p>{html.escape(explanations.CLASS_DICE)}</p><table><thead><tr><th>class</th><th>est. Dice</th>"
            "<th>est. IoU</th><th>est. ARVD</th><th>volume (mm³)</th><th>est. true volume (mm³)</th>"
            f"<th>error volume (mm³)</th></tr></thead><tbody>{body}</tbody></table></section>")


def _legend_html(report: Report) -> str:
    items = "".join(f'<li>{_swatch(c.label)}class {c.label} {html.escape(c.name)}</li>' for c in report.classes)
    return ('<div class="legend" id="legend"><h3>Legend</h3><ul class="classes">' + items + "</ul>"
            "<p>In each class's colour: <b>outline</b> = the segmentation being checked; <b>translucent fill</b> = "
            "the predicted probability that the segmentation is wrong there (more opaque = more likely); "
            "<b>rectangle</b> = an error box (drawn on the slices along the slice axis only). Letters at the edges "
            "give the patient's directions (R/L right/left, A/P anterior/posterior, S/I superior/inferior; "
            "radiological convention: the patient's right is on your left).</p></div>")


def _pictures_html(report: Report, pictures: Sequence[Picture], page_dir: Path) -> str:
    if not pictures:
        return '<section id="pictures"><h2>Pictures</h2><p>No pictures were drawn (--thumbnails 0).</p></section>'
    views = [p for p in pictures if p.slice_index is None]
    slices = [p for p in pictures if p.slice_index is not None]
    top = report.boxes[0] if report.boxes else None
    where = (f"through the worst error box (class {top.label}, slice {top.slice}, score {top.score:.1f})" if top
             else "through the most likely error (no error box)")
    views_html = "".join(_figure(p, page_dir, f"{p.view.value}, plane {p.plane}") for p in views)
    slices_html = "".join(_figure(p, page_dir, f"slice {p.slice_index} ({p.view.value}), error {p.error_score:.1f}")
                          for p in slices)
    return ('<section id="pictures"><h2>Where the errors are</h2>' + _legend_html(report)
            + f'<h3>Three orientations {where}</h3><div class="views">{views_html}</div>'
            + f'<h3>Worst slices along the slice axis, worst first</h3><div class="views">{slices_html}</div>'
            + "</section>")


def _boxes_html(report: Report) -> str:
    if not report.boxes:
        return '<section id="boxes"><h2>Error boxes</h2><p>None above the threshold.</p></section>'
    body = "".join(
        f"<tr><td>{_swatch(b.label)}{b.label}</td><td class='num'>{b.slice}</td>"
        f"<td class='num'>{', '.join(f'{v:.1f}' for v in b.center_ras)}</td>"
        f"<td class='num'>{' × '.join(f'{v:.1f}' for v in b.size_mm)}</td><td class='num'>{b.area_mm2:.0f}</td>"
        f"<td class='num'>{b.score:.1f}</td><td class='num'>{b.max_prob:.2f}</td></tr>"
        for b in report.boxes[:MAX_BOXES_LISTED])
    more = (f"<p>{len(report.boxes) - MAX_BOXES_LISTED} more in report.json.</p>"
            if len(report.boxes) > MAX_BOXES_LISTED else "")
    return ('<section id="boxes"><h2>Error boxes</h2><table><thead><tr><th>class</th><th>slice</th>'
            "<th>centre RAS (mm)</th><th>size z × y × x (mm)</th><th>area (mm²)</th><th>score</th><th>max prob.</th>"
            f"</tr></thead><tbody>{body}</tbody></table>{more}</section>")


def _notices_html(report: Report) -> str:
    if not report.notices:
        return ""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in report.notices)
    return f'<section id="notices"><h2>Notices</h2><ul>{items}</ul></section>'


def _slicer_html(context: PageContext) -> str:
    if context.slicer_script is None:
        return ""
    script = str(context.slicer_script)
    files = "".join(f"<li>{html.escape(what)}: <code>{html.escape(path)}</code></li>"
                    for what, path in context.files.items())
    console = f'exec(open({script!r}, encoding="utf-8").read())'
    return ('<section id="slicer"><h2>Open in 3D Slicer</h2>'
            "<p>From a terminal (loads the image, the segmentation and every class's error map, shows the first over "
            "the image and centres the views on the worst error box):</p>"
            f'<pre class="command">Slicer --python-script {html.escape(shell_quote(script))}</pre>'
            "<p>or, in a running Slicer, paste into the Python console (View &rarr; Python Console):</p>"
            f'<pre class="command">{html.escape(console)}</pre>'
            "<p>or drag these files onto the Slicer window (choose <i>Segmentation</i> for the segmentation), then "
            f"use the SegQC module to review the error boxes:</p><ul>{files}</ul></section>")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.estimates th { white-space: nowrap; }
.swatch { display: inline-block; width: 14px; height: 14px; margin-right: 6px; vertical-align: -2px;
          border: 1px solid #333; }
.legend { background: #fafafa; border: 1px solid #ddd; padding: 0.3em 1em; margin: 0.5em 0; }
.legend ul.classes { list-style: none; padding: 0; margin: 0.3em 0; }
.legend ul.classes li { display: inline-block; margin-right: 2em; }
.views { display: flex; flex-wrap: wrap; gap: 12px; }
figure.view { margin: 0; }
.frame { position: relative; display: inline-block; padding: 16px; background: #111; }
.frame img { display: block; image-rendering: pixelated; }
.orient { position: absolute; color: #ffd75e; font: bold 13px/1 monospace; }
.orient.top { top: 2px; left: 50%; transform: translateX(-50%); }
.orient.bottom { bottom: 2px; left: 50%; transform: translateX(-50%); }
.orient.left { left: 3px; top: 50%; transform: translateY(-50%); }
.orient.right { right: 3px; top: 50%; transform: translateY(-50%); }
figcaption { font-size: 0.85em; color: #555; }
.banner { background: #fde2e1; border: 2px solid #c62828; padding: 0.5em 1em; margin: 0.5em 0; }
.flag { background: #fff3cd; border: 1px solid #e0b100; border-radius: 3px; padding: 0 4px; font-size: 0.9em; }
ul.flags { padding-left: 1.2em; }
pre.command { background: #f5f5f5; padding: 0.5em; overflow-x: auto; }
.caveat { font-style: italic; color: #555; }
nav a { margin-right: 1em; }
"""


def case_page_html(case_id: str, report: Report, orientation: Orientation, pictures: Sequence[Picture],
                   page_dir: Path, context: PageContext, report_path: Optional[Path] = None) -> str:
    title = f"SegQC review: {case_id}"
    nav = []
    if context.index_href:
        nav.append(f'<a href="{html.escape(context.index_href, quote=True)}">&larr; ranking</a>')
    if report_path is not None:
        nav.append(f'<a href="{_rel(report_path, page_dir)}">report.json</a>')
    rank = (f"<p>Rank {context.rank} of {context.total} (worst first by estimated Dice)"
            f"{'' if not context.review_status else f'; review status: {html.escape(context.review_status)}'}</p>"
            if context.rank is not None else "")
    model = report.model or {}
    model_line = (f"<p>Model {html.escape(str(model.get('name')))} {html.escape(str(model.get('version')))}</p>"
                  if model else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<nav>{''.join(nav)}</nav>
<h1>{html.escape(title)}</h1>
{rank}{model_line}
{_flags_html(report, context)}
{_domain_html(report)}
{_estimates_html(report, orientation)}
{_classes_html(report)}
{_pictures_html(report, pictures, page_dir)}
{_boxes_html(report)}
{_notices_html(report)}
{_slicer_html(context)}
</body>
</html>
"""


def write_case_page(path: Path, case_id: str, report: Report, orientation: Orientation, pictures: Sequence[Picture],
                    context: PageContext, report_path: Optional[Path] = None) -> Path:
    """Write the page atomically at ``path``; picture and report links are made relative to its folder."""
    page = case_page_html(case_id, report, orientation, pictures, path.parent.resolve(), context,
                          None if report_path is None else report_path.resolve())
    return write_text_atomic(path, page)

