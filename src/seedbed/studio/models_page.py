"""The Models pages: the registry (seedbed.studio.registry), each model's lineage, card and eval table, and one
click to export it to GGUF (a `seedbed quantize` job) or to chat with it in the playground."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from seedbed.html_page import table
from seedbed.recipe import QUANTIZE_METHODS
from seedbed.studio.layout import studio_page
from seedbed.studio.registry import find_models, lineage

router = APIRouter()


@router.get("/models", response_class=HTMLResponse)
def models_list(request: Request):
    s = request.app.state.studio
    entries = find_models(s.data_dir)
    rows = "".join(
        f'<tr><td><a href="/models/{escape(e.path)}">{escape(e.path)}</a></td><td>{escape(e.kind)} ({escape(e.method)})'
        f"</td><td><code>{escape(e.source)}</code></td><td>{escape(', '.join((d['sha256'] or '')[:12] for d in e.data))}"
        f"</td><td>{'' if e.val_loss is None else f'{e.val_loss:.4f}'}</td><td>{e.size_bytes / 2**20:,.1f} MiB</td></tr>"
        for e in entries)
    body = ("<h1>Models</h1><p class=meta>Every model Seedbed wrote under the data directory (the studio's jobs and "
            "the terminal's alike).</p><table id=models><thead><tr><th>model</th><th>made by</th><th>from</th>"
            f"<th>data sha256</th><th>validation loss</th><th>size</th></tr></thead><tbody>{rows}</tbody></table>")
    return studio_page("Models", body, "/models")


@router.get("/models/{path:path}", response_class=HTMLResponse)
def model_page(request: Request, path: str):
    s = request.app.state.studio
    entries = find_models(s.data_dir)
    entry = next((e for e in entries if e.path == path.strip("/")), None)
    if entry is None:
        return HTMLResponse(studio_page("No such model", f"<h1>No model at {escape(path)}</h1>"), status_code=404)
    chain = " ─▶ ".join(f"<code>{escape(step)}</code>" for step in lineage(s.data_dir, entry, entries))
    data = table(["data file", "sha256", "records"], [[d["path"], d["sha256"], d["records"]] for d in entry.data])
    gguf_methods = [m for m, kind in QUANTIZE_METHODS.items() if kind == "gguf"]
    options = "".join(f"<option{' selected' if m == 'q8_0' else ''}>{m}</option>" for m in gguf_methods)
    export = ("" if entry.gguf else
              f'<h3>Export</h3><select id="gguf-method">{options}</select> <button id="export-gguf" '
              f'data-model="{escape(entry.path)}">Export GGUF</button> <span class=meta>a <code>seedbed quantize</code> '
              "job; the GGUF runs with llama.cpp (and Ollama)</span>")
    card_file = s.data_dir / entry.path / "README.md"
    card = card_file.read_text() if card_file.is_file() else "(no model card)"
    body = (f"<h1>Model <code>{escape(entry.path)}</code></h1><p>Lineage: {chain}</p>{data if entry.data else ''}"
            f'<p><a href="/playground?model={escape(entry.path)}"><button class="secondary">Chat with it</button></a> '
            f'<span class=meta>or serve it: <code>seedbed serve --model {escape(entry.path)}</code></span></p>{export}'
            f'<h3>Model card</h3><pre class="cmd" id="model-card">{escape(card)}</pre>')
    return studio_page(entry.path, body, "/models")
