"""The house style of Seedbed's HTML reports (the data datasheet, the eval report): one self-contained page with
inline CSS, no script, font or network fetch, so it opens offline and can be mailed. Callers escape every piece of
text they put in; `table` escapes its headers and cells itself.

>>> print(table(["model", "accuracy"], [["<b>", "30%"]]))
<table><thead><tr><th>model</th><th>accuracy</th></tr></thead><tbody><tr><td>&lt;b&gt;</td><td>30%</td></tr></tbody></table>
"""

from __future__ import annotations

from html import escape

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;background:#f5f7fa;margin:0}
main{max-width:1040px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:36px 0 10px;border-bottom:2px solid #e4e7eb;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#616e7c;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{flex:1 1 180px;border:1px solid #e4e7eb;border-radius:8px;padding:10px 14px}
.card b{display:block;font-size:24px}.card span{color:#616e7c;font-size:13px}
.ok{color:#1e7b34;font-weight:600}.bad{color:#fff;background:#c62828;padding:8px 12px;border-radius:6px;font-weight:700}
.unknown{color:#8a6d00;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13.5px;margin:6px 0}
th,td{padding:5px 8px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f0f3f6}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.broken td{background:#fdecea}
svg{display:block;max-width:100%;height:auto;margin:4px 0 10px}svg text{font:12px system-ui,sans-serif;fill:#1f2933}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:8px 28px}
.example{border-left:3px solid #d0574a;background:#fafbfc;margin:6px 0;padding:6px 10px}
.example pre{white-space:pre-wrap;word-break:break-word;margin:2px 0 0;font:12.5px/1.4 ui-monospace,Menlo,monospace}
.example .id,code{font:12px ui-monospace,Menlo,monospace;color:#616e7c}
details pre{background:#f5f7fa;padding:12px;overflow:auto;font:12.5px/1.4 ui-monospace,Menlo,monospace}
"""


def page(title: str, body: str, css: str = "") -> str:
    """A whole HTML document: `title` (escaped here), the house CSS plus `css`, and `body` (already HTML)."""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}{css}</style></head>'
            f"<body><main>{body}</main></body></html>\n")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A table of plain-text headers and cells, all escaped here."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
