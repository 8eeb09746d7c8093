# Copyright: keyops.runbooks contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write the key inventory for auditors: CSV (DESIGN.md columns in order), JSON, and a self-contained HTML report.

The HTML carries its styles, script and charts (SVG drawn here) inline and a Content-Security-Policy that forbids
fetching anything, so it opens offline and shows the same thing on an auditor's laptop years later.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import os
import tempfile
from collections import Counter
from typing import Any

from ansible_collections.keyops.runbooks.plugins.module_utils.canonical import digest
from ansible_collections.keyops.runbooks.plugins.module_utils.errors import InvalidInput, MissingLibrary
from ansible_collections.keyops.runbooks.plugins.module_utils.policy import SEVERITY_ORDER
from ansible_collections.keyops.runbooks.plugins.module_utils.reconcile import Inventory
from ansible_collections.keyops.runbooks.plugins.module_utils.records import CSV_COLUMNS, parse_time

FORMATS = ("csv", "json", "html")
FILE_NAMES = {"csv": "key-inventory.csv", "json": "key-inventory.json", "html": "key-inventory.html"}
# Reports name weak, exposed and overdue keys, which an attacker would read first: owner-only, like every file here.
FILE_MODE = 0o600
SEVERITY_COLOURS = {"critical": "#7f1d1d", "high": "#dc2626", "medium": "#f59e0b", "low": "#3b82f6", "info": "#9ca3af"}
CLASS_COLOURS = {
    "master-kek": "#7c3aed",
    "kek": "#2563eb",
    "dek": "#0891b2",
    "signing": "#059669",
    "transport": "#d97706",
    "tls-cert": "#db2777",
    "unknown": "#6b7280",
}
AGE_BUCKETS = (
    (0, 25, "0-25%"),
    (25, 50, "25-50%"),
    (50, 75, "50-75%"),
    (75, 100, "75-100%"),
    (100, 150, "100-150%"),
    (150, 10**9, "over 150%"),
)


def csv_text(records: list[dict[str, Any]]) -> str:
    """The inventory CSV: exactly the DESIGN.md columns in order, findings as ``code (severity)`` joined by ``; ``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        writer.writerow([_cell(column, record.get(column)) for column in CSV_COLUMNS])
    return buffer.getvalue()


def _cell(column: str, value: Any) -> str:
    if column == "findings":
        return "; ".join(f"{item['code']} ({item['severity']})" for item in value or [])
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def report_document(
    inventory: Inventory,
    policy: dict[str, Any],
    title: str,
    due_window_days: int,
    source_errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the reports show, as one JSON-ready document; ``content_digest`` ignores the generation time.

    ``source_errors`` (sources that could not be read) are listed only when there are some, so a complete inventory's
    document and digest are the same whichever module built it.
    """
    document: dict[str, Any] = {
        "title": title,
        "as_of": inventory.now,
        "due_window_days": due_window_days,
        "summary": inventory.summary(),
        "findings": inventory.findings(),
        "due_for_rotation": inventory.due,
        "records": inventory.records,
        "missing_from_backend": inventory.missing,
        "unverified_register_entries": inventory.unverified,
        "policy": policy,
    }
    if source_errors:
        document["source_errors"] = source_errors
    stable = {key: value for key, value in document.items() if key != "as_of"}
    stable["due_for_rotation"] = [{k: v for k, v in item.items() if k != "days_left"} for item in inventory.due]
    document["content_digest"] = digest(stable)
    return document


def render_files(document: dict[str, Any], formats: list[str]) -> dict[str, str]:
    """Each requested format's text, keyed by format."""
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise InvalidInput(
            "Write key inventory",
            None,
            f"unknown report format(s) {', '.join(unknown)}",
            f"Set formats to some of {', '.join(FORMATS)}",
        )
    texts: dict[str, str] = {}
    if "csv" in formats:
        texts["csv"] = csv_text(document["records"])
    if "json" in formats:
        texts["json"] = json.dumps(document, indent=2, sort_keys=False, default=str) + "\n"
    if "html" in formats:
        texts["html"] = html_text(document)
    return texts


def previous_digest(output_dir: str) -> str | None:
    try:
        with open(os.path.join(output_dir, FILE_NAMES["json"]), encoding="utf-8") as stream:
            return json.load(stream).get("content_digest")
    except (OSError, ValueError, AttributeError):
        return None


def needs_writing(output_dir: str, document: dict[str, Any], formats: list[str]) -> bool:
    """False when every file is there and the last run's content (apart from its time) is the same."""
    if not all(os.path.exists(os.path.join(output_dir, FILE_NAMES[name])) for name in formats):
        return True
    if "json" not in formats:
        return True
    return previous_digest(output_dir) != document["content_digest"]


def write_files(output_dir: str, texts: dict[str, str]) -> dict[str, str]:
    """Write each file atomically (temp file, then rename); return the paths written."""
    try:
        os.makedirs(output_dir, mode=0o700, exist_ok=True)
    except OSError as error:
        raise InvalidInput(
            "Write key inventory",
            None,
            f"cannot create {output_dir} ({error.strerror})",
            "Set output_dir to a folder the user running the module can write",
        ) from error
    paths = {}
    for name, text in texts.items():
        path = os.path.join(output_dir, FILE_NAMES[name])
        handle, temporary = tempfile.mkstemp(prefix=".keyops-", dir=output_dir)
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
                stream.write(text)
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, path)
        except OSError as error:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise InvalidInput(
                "Write key inventory",
                None,
                f"cannot write {path} ({error.strerror})",
                "Set output_dir to a folder the user running the module can write",
            ) from error
        paths[name] = path
    return paths


# Charts: plain SVG, so the report needs no library and no network.


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def svg_severity_bars(by_severity: dict[str, int]) -> str:
    width, bar_height, left = 560, 26, 90
    rows = list(reversed(SEVERITY_ORDER))
    top = max([1, *by_severity.values()])
    height = len(rows) * (bar_height + 8) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-severity" role="img" '
        f'aria-label="Findings by severity" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
    ]
    for index, name in enumerate(rows):
        count = by_severity.get(name, 0)
        y = 10 + index * (bar_height + 8)
        length = round((width - left - 60) * count / top)
        parts.append(f'<text x="{left - 8}" y="{y + 18}" text-anchor="end" class="label">{_esc(name)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y}" width="{max(length, 1 if count else 0)}" height="{bar_height}" '
            f'fill="{SEVERITY_COLOURS[name]}" data-count="{count}"><title>{_esc(name)}: {count}</title></rect>'
        )
        parts.append(f'<text x="{left + length + 6}" y="{y + 18}" class="value">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_certificate_timeline(records: list[dict[str, Any]], now: dt.datetime, renewal_days: int) -> str:
    """Each certificate a dot at its expiry, stacked per fortnight, from 60 days ago to a year ahead."""
    width, height, left, right, axis_y = 1100, 260, 40, 20, 220
    start, end = now - dt.timedelta(days=60), now + dt.timedelta(days=365)
    span = (end - start).total_seconds()

    def x_of(moment: dt.datetime) -> float:
        clamped = min(max(moment, start), end)
        return left + (width - left - right) * (clamped - start).total_seconds() / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-cert-timeline" role="img" '
        f'aria-label="Certificate expiry timeline" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}">',
        f'<rect x="{x_of(now):.1f}" y="10" width="{x_of(now + dt.timedelta(days=renewal_days)) - x_of(now):.1f}" '
        f'height="{axis_y - 10}" fill="#fef3c7"><title>renewal window</title></rect>',
        f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#374151"/>',
        f'<line x1="{x_of(now):.1f}" y1="10" x2="{x_of(now):.1f}" y2="{axis_y}" stroke="#111827" '
        f'stroke-dasharray="4 3"/>',
        f'<text x="{x_of(now) + 4:.1f}" y="22" class="label">today</text>',
    ]
    month = dt.datetime(start.year, start.month, 1, tzinfo=dt.UTC)
    while month <= end:
        if month >= start:
            parts.append(
                f'<line x1="{x_of(month):.1f}" y1="{axis_y}" x2="{x_of(month):.1f}" y2="{axis_y + 5}" '
                f'stroke="#374151"/><text x="{x_of(month):.1f}" y="{axis_y + 18}" text-anchor="middle" '
                f'class="tick">{month:%b %Y}</text>'
            )
        month = dt.datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=dt.UTC)

    stacks: Counter[int] = Counter()
    certificates = [
        record for record in records if record.get("backend") == "x509" or record.get("key_class") == "tls-cert"
    ]
    for record in sorted(certificates, key=lambda item: str(item.get("expires"))):
        expires = parse_time(record.get("expires"))
        if expires is None:
            continue
        days = (expires - now).days
        colour = "#dc2626" if days < 0 else "#f59e0b" if days < renewal_days else "#16a34a"
        bucket = int((x_of(expires) - left) // 12)
        level = stacks[bucket]
        stacks[bucket] += 1
        cy = axis_y - 9 - level * 13
        if cy < 14:
            continue
        parts.append(
            f'<circle cx="{x_of(expires):.1f}" cy="{cy}" r="6" fill="{colour}" class="cert-dot">'
            f"<title>{_esc(record.get('name'))} ({_esc(record.get('location'))}): expires "
            f"{_esc(record.get('expires'))}, {days} days</title></circle>"
        )
    if any((parse_time(item.get("expires")) or now) > end for item in certificates):
        parts.append(f'<text x="{width - right}" y="{axis_y - 4}" text-anchor="end" class="tick">later &#8594;</text>')
    if not certificates:
        parts.append(
            f'<text x="{width / 2}" y="{axis_y / 2}" text-anchor="middle" class="label">'
            "no certificates in this inventory</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def age_percent(record: dict[str, Any], now: dt.datetime, cryptoperiods: dict[str, int]) -> float | None:
    """How much of its cryptoperiod (or certificate validity) a key has used, in percent."""
    if record.get("key_class") == "tls-cert" or record.get("backend") == "x509":
        issued = parse_time(record.get("not_before") or record.get("created"))
        expires = parse_time(record.get("expires"))
        if issued and expires and expires > issued:
            return 100 * (now - issued).total_seconds() / (expires - issued).total_seconds()
        return None
    period = cryptoperiods.get(record.get("key_class") or "")
    basis = parse_time(record.get("last_rotated")) or parse_time(record.get("created"))
    if not period or basis is None:
        return None
    return 100 * (now - basis).total_seconds() / (period * 86400)


def svg_key_ages(records: list[dict[str, Any]], now: dt.datetime, cryptoperiods: dict[str, int]) -> str:
    """Keys by how much of their cryptoperiod they have used, stacked by key class."""
    width, height, left, bottom = 760, 280, 50, 40
    counts: dict[str, Counter[str]] = {bucket[2]: Counter() for bucket in AGE_BUCKETS}
    for record in records:
        used = age_percent(record, now, cryptoperiods)
        if used is None or record.get("state") not in ("enabled", "expired"):
            continue
        label = next(label for low, high, label in AGE_BUCKETS if low <= max(used, 0) < high)
        counts[label][record.get("key_class") or "unknown"] += 1
    top = max([1, *(sum(bucket.values()) for bucket in counts.values())])
    slot = (width - left - 20) / len(AGE_BUCKETS)
    plot = height - bottom - 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-key-ages" role="img" '
        f'aria-label="Key age as a share of the cryptoperiod" viewBox="0 0 {width} {height + 30}" '
        f'width="{width}" height="{height + 30}">',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" stroke="#374151"/>',
    ]
    for index, (_low, _high, label) in enumerate(AGE_BUCKETS):
        x = left + index * slot + 10
        y = height - bottom
        for key_class, colour in CLASS_COLOURS.items():
            count = counts[label].get(key_class, 0)
            if not count:
                continue
            length = plot * count / top
            y -= length
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot - 20:.1f}" height="{length:.1f}" fill="{colour}" '
                f'class="age-bar"><title>{_esc(label)}: {count} {_esc(key_class)}</title></rect>'
            )
        total = sum(counts[label].values())
        parts.append(
            f'<text x="{x + (slot - 20) / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" class="value">{total}</text>'
        )
        parts.append(
            f'<text x="{x + (slot - 20) / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
            f'class="tick">{_esc(label)}</text>'
        )
    for index, (key_class, colour) in enumerate(CLASS_COLOURS.items()):
        parts.append(
            f'<rect x="{left + index * 100}" y="{height}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{left + index * 100 + 16}" y="{height + 11}" class="tick">{_esc(key_class)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111827; margin: 24px; }
h1 { margin: 0 0 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; }
.meta { color: #4b5563; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 16px; min-width: 120px; }
.card b { display: block; font-size: 24px; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
.chart .label, .chart .value, .chart .tick { font-size: 12px; fill: #111827; }
table { border-collapse: collapse; width: 100%; margin-top: 8px; font-size: 13px; }
th, td { border: 1px solid #e5e7eb; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; cursor: pointer; position: sticky; top: 0; }
.sev { color: #fff; border-radius: 4px; padding: 0 6px; font-size: 12px; white-space: nowrap; }
{% for name, colour in severity_colours.items() %}.sev-{{ name }} { background: {{ colour }}; }
{% endfor %}
.ok { color: #166534; } .muted { color: #6b7280; } .error { color: #b91c1c; }
input[type=search] { padding: 4px 8px; width: 320px; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">As of {{ doc.as_of }} &middot; backends: {{ summary.backends_scanned | join(", ") or "none" }}
&middot; content digest <code>{{ doc.content_digest[:16] }}</code></p>

<h2 id="summary">Summary</h2>
<div class="cards">
  <div class="card">keys<b id="count-keys">{{ summary["keys"] }}</b></div>
  <div class="card">compliant<b>{{ summary.compliant_keys }}</b></div>
  <div class="card">findings<b id="count-findings">{{ summary.findings }}</b></div>
  <div class="card">not in register<b>{{ summary.not_in_register }}</b></div>
  <div class="card">missing from backend<b>{{ summary.missing_from_backend }}</b></div>
  <div class="card">register drift<b>{{ summary.drift }}</b></div>
  <div class="card">due in {{ due_window }} days<b>{{ summary.due_for_rotation }}</b></div>
</div>
<table class="plain">
  <tr><th>backend</th><th>keys</th></tr>
  {% for name, count in summary.by_backend.items() %}<tr><td>{{ name }}</td><td>{{ count }}</td></tr>{% endfor %}
</table>
{% if doc.get("source_errors") %}
<p class="error">{{ doc.source_errors | length }} source(s) could not be read, so this inventory is incomplete:
{% for item in doc.source_errors -%}
  {{ item.backend }} {{ item.source }}: {{ item.msg }}{{ "; " if not loop.last }}
{%- endfor %}.</p>
{% endif %}
{% if doc.unverified_register_entries %}
<p class="muted">{{ doc.unverified_register_entries | length }} register entries were not checked because their backend
(or one of its sources) was not read in this run:
{% for entry in doc.unverified_register_entries -%}
  {{ entry.name }} ({{ entry.backend }}){{ ", " if not loop.last }}
{%- endfor %}.</p>
{% endif %}

<h2 id="charts">Charts</h2>
<div class="charts">
  <figure><figcaption>Findings by severity</figcaption>
    {{ chart_severity }}</figure>
  <figure><figcaption>Key age as a share of the cryptoperiod (certificates: of their validity)</figcaption>
    {{ chart_ages }}</figure>
  <figure><figcaption>Certificate expiries (shaded: the {{ renewal_days }}-day renewal window)</figcaption>
    {{ chart_certs }}</figure>
</div>

<h2 id="findings">Findings by severity</h2>
{% for severity in severities %}{% set items = findings_by_severity[severity] %}{% if items %}
<h3><span class="sev sev-{{ severity }}">{{ severity }}</span> {{ items | length }}</h3>
<table class="sortable findings" data-severity="{{ severity }}">
<thead><tr><th>code</th><th>key</th><th>backend</th><th>location</th><th>finding</th></tr></thead>
<tbody>{% for item in items %}
<tr><td><code>{{ item.code }}</code></td><td>{{ item.key }}</td><td>{{ item.backend }}</td>
<td>{{ item.location }}</td><td>{{ item.message }}</td></tr>{% endfor %}
</tbody></table>
{% endif %}{% endfor %}
{% if not doc.findings %}<p class="ok">No findings.</p>{% endif %}

<h2 id="due">Due for rotation or renewal in the next {{ due_window }} days</h2>
{% if doc.due_for_rotation %}
<table class="sortable" id="due-table">
<thead><tr><th>due</th><th>days left</th><th>action</th><th>key</th><th>class</th><th>backend</th><th>owner</th>
</tr></thead>
<tbody>{% for item in doc.due_for_rotation %}
<tr><td>{{ item.due }}</td><td>{{ item.days_left }}</td><td>{{ item.action }}</td><td>{{ item.name }}</td>
<td>{{ item.key_class }}</td><td>{{ item.backend }}</td><td>{{ item.owner or "" }}</td></tr>{% endfor %}
</tbody></table>
{% else %}<p class="ok">Nothing due.</p>{% endif %}

<h2 id="inventory">Inventory</h2>
<input type="search" id="filter" placeholder="filter rows" aria-label="filter the inventory">
<table class="sortable" id="inventory-table">
<thead><tr>{% for column in columns %}<th>{{ column }}</th>{% endfor %}</tr></thead>
<tbody>{% for record in doc.records + doc.missing_from_backend %}
<tr>{% for column in columns %}<td>
{%- if column == "findings" %}{% for item in record.findings -%}
<span class="sev sev-{{ item.severity }}" title="{{ item.message }}">{{ item.code }}</span> {% endfor %}
{%- else %}{{ cell(column, record[column]) }}{% endif -%}
</td>{% endfor %}</tr>{% endfor %}
</tbody></table>

<p class="muted" id="render-status">static</p>
<script>
(function () {
  "use strict";
  function sortBy(table, index) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var down = table.getAttribute("data-sort") !== String(index);
    rows.sort(function (a, b) {
      var x = a.cells[index].textContent, y = b.cells[index].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return down ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.setAttribute("data-sort", down ? String(index) : "");
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell, index) {
      cell.addEventListener("click", function () { sortBy(table, index); });
    });
  });
  var filter = document.getElementById("filter");
  filter.addEventListener("input", function () {
    var needle = filter.value.toLowerCase();
    document.querySelectorAll("#inventory-table tbody tr").forEach(function (row) {
      row.style.display = row.textContent.toLowerCase().indexOf(needle) >= 0 ? "" : "none";
    });
  });
  var charts = document.querySelectorAll("svg.chart").length;
  var status = document.getElementById("render-status");
  status.textContent = "rendered: " + charts + " charts";
  document.documentElement.setAttribute("data-report-ready", String(charts));
})();
</script>
</body>
</html>
"""


def html_text(document: dict[str, Any]) -> str:
    try:
        import jinja2
        from markupsafe import Markup
    except ImportError as error:  # pragma: no cover - Jinja2 ships with ansible-core
        raise MissingLibrary("jinja2") from error
    now = parse_time(document["as_of"])
    policy = document["policy"]
    by_severity: dict[str, list[dict[str, Any]]] = {name: [] for name in SEVERITY_ORDER}
    for item in document["findings"]:
        by_severity.setdefault(item["severity"], []).append(item)
    all_records = document["records"]
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string(_TEMPLATE)
    return template.render(
        doc=document,
        title=document["title"],
        summary=document["summary"],
        severities=list(reversed(SEVERITY_ORDER)),
        findings_by_severity=by_severity,
        severity_colours=SEVERITY_COLOURS,
        columns=CSV_COLUMNS,
        cell=_cell,
        due_window=document["due_window_days"],
        renewal_days=policy["certificate_renewal_window_days"],
        chart_severity=Markup(svg_severity_bars(document["summary"]["by_severity"])),
        chart_ages=Markup(svg_key_ages(all_records, now, policy["cryptoperiod_days"])),
        chart_certs=Markup(svg_certificate_timeline(all_records, now, policy["certificate_renewal_window_days"])),
    )
