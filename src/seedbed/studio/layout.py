"""The studio's page shell: the house style of Seedbed's HTML (seedbed.html_page), a navigation bar, and the one
small script (studio.js, served from the package: nothing from a CDN)."""

from __future__ import annotations

from html import escape

from seedbed.html_page import page

NAV = [("/jobs", "Jobs"), ("/datasets", "Datasets"), ("/models", "Models"), ("/playground", "Playground")]
CSS = """
nav{display:flex;gap:18px;align-items:center;border-bottom:2px solid #e4e7eb;padding:0 0 10px;margin-bottom:8px}
nav b{font-size:18px;margin-right:12px}nav a{color:#1f2933;text-decoration:none;padding:4px 8px;border-radius:6px}
nav a.here{background:#e3f2fd;color:#0d47a1}
iframe.datasheet{width:100%;height:70vh;border:1px solid #cbd2d9;border-radius:6px}
form.recipe{display:grid;grid-template-columns:220px 1fr;gap:6px 14px;align-items:center;margin:10px 0}
form.recipe label{font-weight:600;font-size:13.5px}form.recipe small{grid-column:2;color:#616e7c;margin-top:-4px}
input,select,textarea{font:inherit;padding:4px 6px;border:1px solid #cbd2d9;border-radius:5px}
textarea{width:100%;font:12.5px/1.4 ui-monospace,Menlo,monospace}
button{font:inherit;padding:6px 14px;border:0;border-radius:6px;background:#1565c0;color:#fff;cursor:pointer}
button.secondary{background:#e4e7eb;color:#1f2933}button.danger{background:#c62828}
pre.log{background:#102a43;color:#d9e2ec;padding:10px;max-height:360px;overflow:auto;font:12px/1.4 ui-monospace,monospace}
pre.cmd{background:#f5f7fa;padding:8px;white-space:pre-wrap;font:12.5px ui-monospace,monospace}
.state{padding:2px 8px;border-radius:10px;font-size:12.5px;font-weight:600}
.state.running{background:#e3f2fd;color:#0d47a1}.state.done{background:#e8f5e9;color:#1e7b34}
.state.failed{background:#fdecea;color:#c62828}.state.queued{background:#fff8e1;color:#8a6d00}
.state.cancelled{background:#eceff1;color:#455a64}
.bar{height:10px;background:#e4e7eb;border-radius:5px;overflow:hidden;margin:6px 0}.bar i{display:block;height:100%;background:#1565c0}
.error{color:#c62828;font-weight:600}.tok-trained{background:#c8e6c9}.tok-context{color:#616e7c}
.chat{border:1px solid #e4e7eb;border-radius:8px;padding:10px;min-height:80px;white-space:pre-wrap}
.ab{display:grid;grid-template-columns:1fr 1fr;gap:14px}
"""


def studio_page(title: str, body: str, here: str = "") -> str:
    """A whole studio page; `body` is already HTML (callers escape what they put in)."""
    links = "".join(f'<a href="{href}"{" class=here" if href == here else ""}>{name}</a>' for href, name in NAV)
    nav = f"<nav><b>Seedbed Studio</b>{links}</nav>"
    html = page(f"{title} · Seedbed Studio", nav + body, css=CSS)
    return html.replace("</body>", '<script src="/static/studio.js"></script></body>')


def state_badge(state: str) -> str:
    return f'<span class="state {escape(state)}">{escape(state)}</span>'
