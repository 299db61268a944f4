"""The datasheet of `seedbed data prepare`: report.json drawn as one self-contained report.html.

It answers the questions of "Datasheets for Datasets" (Gebru et al. 2018) that a curation run can answer:
what went in, what came out, what was removed and why, with examples. One file with inline CSS and inline
SVG, no script, font or network fetch (the house style of `seedbed.html_page`), so it opens offline and can be
mailed to a data owner. Every piece of text taken from the report is escaped: examples are user data and may hold
markup.

>>> page = render_datasheet({"input_records": 3, "kept": {"total": 2}, "dropped": {"total": 1}})
>>> "✓ 3 in = 2 kept + 1 dropped" in page
True
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

import yaml

from seedbed.html_page import page

ROW = 22  # px per bar in every chart: room for 12px text
KEPT, DROPPED, BEFORE, INPUT = "#3d7ab8", "#d0574a", "#b8c2cc", "#6b7d8f"
EXAMPLES_PER_REASON = 3  # enough to judge a rule, few enough to read


def render_datasheet(report: dict[str, Any]) -> str:
    """The whole report.html for one report.json; missing or malformed sections are left out, never fatal.

    >>> "<h2>Stages</h2>" in render_datasheet({"stages": [{"name": "pii", "records_in": 5, "records_out": 5}]})
    True
    """
    report = report if isinstance(report, dict) else {}
    body = "".join(_section(title, draw, report) for title, draw in [
        ("", _summary), ("What went in", _inputs), ("Stages", _stages),
        ("What was removed and why", _removed), ("What came out", _came_out),
        ("Personal data redacted", _redactions), ("Duplicate clusters", _duplicates),
        ("Examples of removed records", _examples), ("Recipe", _recipe)])
    return page("Seedbed datasheet", body)


def _section(title: str, draw, report: dict) -> str:
    try:
        inner = draw(report)
    except Exception as error:  # a malformed corner of the report must not cost the data owner the rest of the page
        inner = f'<p class="bad">This section could not be drawn ({escape(type(error).__name__)}: {escape(str(error))}).</p>'
    if not inner:
        return ""
    return f"<section>{f'<h2>{escape(title)}</h2>' if title else ''}{inner}</section>"


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fmt(value: Any, digits: int = 0) -> str:
    n = _num(value)
    if n is None:
        return "—" if value is None else escape(str(value))
    if digits:
        return f"{n:,.{digits}f}"
    if float(n).is_integer():
        return f"{int(n):,}"
    return f"{n:,.0f}" if abs(n) >= 100 else f"{n:.3g}"  # 375.4 records/s, but bin edge 0.1 stays 0.1


def _cell(value: Any, digits: int = 0) -> str:
    return f'<td class="n">{_fmt(value, digits)}</td>'


def _summary(report: dict) -> str:
    kept, dropped = _dict(report.get("kept")), _dict(report.get("dropped"))
    n_in, n_dropped = _num(report.get("input_records")), _num(dropped.get("total"))
    splits = " · ".join(f"{escape(str(k))} {_fmt(v)}" for k, v in kept.items() if k != "total")
    share = f"{100 * n_dropped / n_in:.1f}% of input" if n_in and n_dropped is not None else ""
    cards = [("records in", _fmt(n_in), ""), ("kept", _fmt(kept.get("total")), splits),
             ("dropped", _fmt(n_dropped), share),
             ("time", f"{_fmt(report.get('seconds'), 1)} s", f"{_fmt(report.get('records_per_s'))} records/s")]
    meta = " · ".join(f"{label} {escape(str(report[key]))}" for key, label in [
        ("created", "created"), ("seedbed_version", "seedbed"), ("engine", "engine"), ("workers", "workers")]
        if report.get(key) is not None)
    split = _dict(report.get("split"))
    split_line = " · ".join(f"{escape(str(k)).replace('_', ' ')} <code>{escape(str(v))}</code>" for k, v in split.items())
    return (f'<h1>Datasheet: {_fmt(kept.get("total"))} records kept</h1><p class="meta">{meta}</p>'
            + "".join(f'<div class="card"><span>{label}</span><b>{value}</b><span>{note}</span></div>'
                      for label, value, note in cards).join(['<div class="cards">', "</div>"])
            + _reconciliation(report) + (f'<p class="meta">Split: {split_line}</p>' if split_line else ""))


def _reconciliation(report: dict) -> str:
    """The line that says whether every record is accounted for: input = kept + dropped, stage by stage."""
    n_in = _num(report.get("input_records"))
    n_kept, n_dropped = _num(_dict(report.get("kept")).get("total")), _num(_dict(report.get("dropped")).get("total"))
    if None in (n_in, n_kept, n_dropped):
        return '<p class="unknown">? Not reconciled: the report lacks input, kept or dropped totals.</p>'
    broken = [f"stage {escape(str(name))}: {why}" for name, why in _stage_problems(report)]
    if n_in == n_kept + n_dropped and not broken:
        return f'<p class="ok">✓ {_fmt(n_in)} in = {_fmt(n_kept)} kept + {_fmt(n_dropped)} dropped</p>'
    lines = [] if n_in == n_kept + n_dropped else [
        f"{_fmt(n_in)} in ≠ {_fmt(n_kept)} kept + {_fmt(n_dropped)} dropped "
        f"({_fmt(n_in - n_kept - n_dropped)} records unaccounted for)"]
    return f'<p class="bad">✗ THE COUNTS DO NOT ADD UP: {"; ".join(lines + broken)}</p>'


def _stage_problems(report: dict) -> list[tuple[str, str]]:
    """(stage, why) for each stage whose in − dropped ≠ out, or whose in ≠ the previous stage's out."""
    problems, previous_out = [], None
    for stage in map(_dict, _list(report.get("stages"))):
        n_in, n_out, n_dropped = (_num(stage.get(k)) for k in ("records_in", "records_out", "dropped"))
        name = stage.get("name", "?")
        if None not in (n_in, n_out, n_dropped) and n_in - n_dropped != n_out:
            problems.append((name, f"{_fmt(n_in)} in − {_fmt(n_dropped)} dropped ≠ {_fmt(n_out)} out"))
        if None not in (previous_out, n_in) and n_in != previous_out:
            problems.append((name, f"{_fmt(n_in)} in ≠ {_fmt(previous_out)} out of the stage before"))
        previous_out = n_out
    return problems


def _inputs(report: dict) -> str:
    rows = []
    for source in map(_dict, _list(report.get("inputs"))):
        shapes = ", ".join(f"{escape(str(k))} {_fmt(v)}" for k, v in _dict(source.get("shapes")).items())
        digest = str(source.get("sha256") or "")
        rows.append(f"<tr><td><code>{escape(str(source.get('path', '?')))}</code></td>{_cell(source.get('records'))}"
                    f"<td>{shapes}</td><td><code title=\"{escape(digest)}\">{escape(digest[:12])}</code></td></tr>")
    return _table(["file", "records", "shapes", "sha256"], rows) if rows else ""


def _stages(report: dict) -> str:
    stages = [s for s in map(_dict, _list(report.get("stages"))) if s]
    broken = {name for name, _ in _stage_problems(report)}
    rows = []
    for s in stages:
        reasons = ", ".join(f"{escape(str(k))} {_fmt(v)}" for k, v in _dict(s.get("reasons")).items())
        mark = "✗" if s.get("name") in broken else "✓"
        rows.append(f'<tr{" class=broken" if mark == "✗" else ""}><td>{escape(str(s.get("name", "?")))}</td>'
                    + "".join(_cell(s.get(k)) for k in ("records_in", "records_out", "dropped", "modified"))
                    + f'{_cell(s.get("seconds"), 2)}{_cell(s.get("records_per_s"))}<td>{reasons}</td><td>{mark}</td></tr>')
    if not rows:
        return ""
    table = _table(["stage", "in", "out", "dropped", "modified", "seconds", "records/s", "reasons", "adds up"], rows)
    return table + "<h3>Records through the stages</h3>" + _funnel(report, stages)


def _funnel(report: dict, stages: list[dict]) -> str:
    """A waterfall: one bar per stage, the records it passed on in blue and those it dropped in red after them."""
    rows = [("input", [(_num(report.get("input_records")) or _num(stages[0].get("records_in")) or 0, INPUT)])]
    rows += [(str(s.get("name", "?")), [(_num(s.get("records_out")) or 0, KEPT), (_num(s.get("dropped")) or 0, DROPPED)])
             for s in stages]
    kept = {k: _num(v) for k, v in _dict(report.get("kept")).items() if k != "total" and _num(v) is not None}
    if kept:
        rows.append((" / ".join(kept), [(v, shade) for v, shade in zip(kept.values(), [KEPT, "#79a7d3", "#a9c7e6"] * 9)]))
    return _bars(rows, legend=[("passed on", KEPT), ("dropped", DROPPED)])


def _bars(rows: list[tuple[str, list[tuple[float, str]]]], *, stacked: bool = True,
          legend: list[tuple[str, str]] = (), width: int = 980) -> str:
    """Horizontal bars as SVG: each row is a label and segments (value, colour), stacked or one under another."""
    if not rows:
        return ""
    top = max((sum(v for v, _ in segs) if stacked else max((v for v, _ in segs), default=0)) for _, segs in rows) or 1
    label_w = min(220, 12 + 7 * max(len(label) for label, _ in rows))
    span = width - label_w - 90  # room at the right for the number
    y, parts = (18 if legend else 0), []
    for i, (text, colour) in enumerate(legend):
        parts.append(f'<rect x="{label_w + 110 * i}" y="2" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{label_w + 110 * i + 14}" y="11">{escape(text)}</text>')
    for label, segments in rows:
        band = ROW if stacked else ROW * 0.6 * len(segments) + 6
        parts.append(f'<text x="{label_w - 6}" y="{y + band / 2 + 4:.1f}" text-anchor="end">{escape(label[:32])}</text>')
        x, bar_h = label_w, (14 if stacked else ROW * 0.6 - 2)
        for j, (value, colour) in enumerate(segments):
            w, bar_y = span * value / top, (y + 4 if stacked else y + 3 + j * ROW * 0.6)
            parts.append(f'<rect x="{x:.1f}" y="{bar_y:.1f}" width="{w:.1f}" height="{bar_h:.1f}" fill="{colour}">'
                         f"<title>{escape(label)}: {_fmt(value)}</title></rect>")
            if not stacked:
                parts.append(f'<text x="{x + w + 4:.1f}" y="{bar_y + bar_h - 2:.1f}">{_fmt(value)}</text>')
            x = x + w if stacked else x
        if stacked:
            numbers = _fmt(segments[0][0]) + "".join(  # 1,180 − 20 for a stage, 900 + 50 for the splits
                f" {'−' if colour == DROPPED else '+'} {_fmt(v)}" for v, colour in segments[1:] if v)
            parts.append(f'<text x="{x + 4:.1f}" y="{y + 15}">{numbers}</text>')
        y += band
    return f'<svg viewBox="0 0 {width} {y + 4:.0f}" width="{width}" role="img">{"".join(parts)}</svg>'


def _chart(title: str, counts: Any, colour: str = KEPT, *, sort: bool = True) -> str:
    items = [(str(k), v) for k, v in _dict(counts).items() if _num(v) is not None]
    if sort:
        items.sort(key=lambda kv: -kv[1])
    rows = [(k, [(v, colour)]) for k, v in items]
    return f"<div><h3>{escape(title)}</h3>{_bars(rows, stacked=False, width=520)}</div>" if rows else ""


def _paired(title: str, labels: list[str], before: list, after: list) -> str:
    rows = [(label, [(_num(b) or 0, BEFORE), (_num(a) or 0, KEPT)]) for label, b, a in zip(labels, before, after)]
    legend = [("before", BEFORE), ("after", KEPT)]
    return f"<div><h3>{escape(title)}</h3>{_bars(rows, stacked=False, legend=legend, width=520)}</div>" if rows else ""


def _bin_labels(edges: list, n: int) -> list[str]:
    labels = [f"{_fmt(lo)}–{_fmt(hi)}" for lo, hi in zip(edges, edges[1:])]
    return (labels + [f"≥ {_fmt(edges[-1])}" if edges else "?"] * n)[:n]


def _removed(report: dict) -> str:
    dropped = _dict(report.get("dropped"))
    charts = _chart("Dropped, by reason", dropped.get("by_reason"), DROPPED) + _chart(
        "Dropped, by stage", dropped.get("by_stage"), DROPPED, sort=False)
    return f'<div class="charts">{charts}</div>' if charts else ""


def _came_out(report: dict) -> str:
    hist = _dict(report.get("histograms"))
    before, after = _dict(hist.get("category_before")), _dict(hist.get("category_after"))
    names = sorted(set(before) | set(after), key=lambda k: -(_num(before.get(k)) or 0))
    charts = _paired("Category, before and after", names, [before.get(k) for k in names], [after.get(k) for k in names])
    length = _dict(hist.get("length_chars"))
    edges, b, a = _list(length.get("edges")), _list(length.get("before")), _list(length.get("after"))
    if b or a:
        n = max(len(b), len(a))
        charts += _paired("Length in characters, before and after", _bin_labels(edges, n), b + [0] * (n - len(b)), a + [0] * (n - len(a)))
    charts += _chart("Language", hist.get("language"))
    tox = _dict(hist.get("toxicity_max"))
    counts = _list(tox.get("counts"))
    if counts:
        charts += _chart("Highest toxicity score per record", dict(zip(_bin_labels(_list(tox.get("edges")), len(counts)), counts)),
                         INPUT, sort=False)
    return f'<div class="charts">{charts}</div>' if charts else ""


def _redactions(report: dict) -> str:
    return _chart("Spans replaced, by type", report.get("redactions"), INPUT)


def _duplicates(report: dict) -> str:
    dup = _dict(report.get("duplicates"))
    counts = " · ".join(f"{escape(k.replace('_', ' '))} {_fmt(dup[k])}" for k in ("exact_clusters", "near_clusters") if k in dup)
    rows = []
    for cluster in map(_dict, _list(dup.get("largest"))):
        gone = [str(x) for x in _list(cluster.get("dropped"))]
        shown = ", ".join(escape(x) for x in gone[:8]) + (f" … and {len(gone) - 8} more" if len(gone) > 8 else "")
        rows.append(f"<tr><td>{escape(str(cluster.get('kind', '')))}</td>{_cell(cluster.get('similarity'), 2)}"
                    f"<td><code>{escape(str(cluster.get('kept', '')))}</code></td>{_cell(len(gone))}<td><code>{shown}</code></td></tr>")
    table = _table(["kind", "similarity", "kept", "dropped", "dropped ids"], rows) if rows else ""
    return (f'<p class="meta">{counts}</p>' if counts else "") + table


def _examples(report: dict) -> str:
    out = []
    for reason, records in _dict(report.get("examples")).items():
        shown = "".join(f'<div class="example"><span class="id">{escape(str(_dict(r).get("id", "")))}</span>'
                        f'<pre>{escape(str(_dict(r).get("text", ""))[:600])}</pre></div>'
                        for r in _list(records)[:EXAMPLES_PER_REASON])
        out.append(f"<h3>{escape(str(reason))}</h3>{shown or '<p class=meta>no example kept</p>'}")
    return "".join(out)


def _recipe(report: dict) -> str:
    recipe = report.get("recipe")
    if not recipe:
        return ""
    try:
        text = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:  # a value YAML cannot represent: JSON with str() for the rest still shows it
        text = json.dumps(recipe, indent=2, default=str)
    return f"<details><summary>The resolved data recipe</summary><pre>{escape(text)}</pre></details>"


def _table(headers: list[str], rows: list[str]) -> str:
    return f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in headers)}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
