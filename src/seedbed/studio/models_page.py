"""The Models pages: the registry (seedbed.studio.registry) with its size / quality Pareto plot
(seedbed.studio.quality), each model's lineage, card and eval table, and one click to export it to GGUF (a
`seedbed quantize` job), to serve it (a `seedbed serve` job), to chat with it in the playground, or to compare it
with others (seedbed.studio.compare_page)."""

from __future__ import annotations

import json
from html import escape

from markdown_it import MarkdownIt

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from seedbed.html_page import table
from seedbed.recipe import QUANTIZE_METHODS
from seedbed.studio.charts import ScatterPoint, scatter_chart
from seedbed.studio.jobs_page import served_url
from seedbed.studio.layout import studio_page
from seedbed.studio.quality import gather, lower_is_better, metric_choices, pareto_front
from seedbed.studio.registry import find_models, lineage

router = APIRouter()
# CommonMark with tables (the eval table `seedbed eval` writes into the card); raw HTML in a card is shown as text,
# never run: a card's text may come from anyone's data.
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def card_html(markdown: str) -> str:
    return MARKDOWN.render(markdown)


def served_name(path: str) -> str:
    """The OpenAI model name a served model answers to: its directory's name."""
    return path.rstrip("/").rsplit("/", 1)[-1] or "model"


@router.get("/models", response_class=HTMLResponse)
def models_list(request: Request, metric: str | None = None):
    s = request.app.state.studio
    entries = find_models(s.data_dir)
    rows = "".join(
        f'<tr><td><input type="checkbox" name="model" value="{escape(e.path)}" form="compare-form" '
        f'aria-label="compare {escape(e.path)}"></td><td><a href="/models/{escape(e.path)}">{escape(e.path)}</a></td>'
        f"<td>{escape(e.kind)} ({escape(e.method)})</td><td><code>{escape(e.source)}</code></td>"
        f"<td>{escape(', '.join((d['sha256'] or '')[:12] for d in e.data))}</td>"
        f"<td>{'' if e.val_loss is None else f'{e.val_loss:.4f}'}</td><td>{e.size_bytes / 2**20:,.1f} MiB</td></tr>"
        for e in entries)
    body = ("<h1>Models</h1><p class=meta>Every model Seedbed wrote under the data directory (the studio's jobs and "
            "the terminal's alike).</p><table id=models><thead><tr><th></th><th>model</th><th>made by</th><th>from</th>"
            f"<th>data sha256</th><th>validation loss</th><th>size</th></tr></thead><tbody>{rows}</tbody></table>"
            '<form id="compare-form" action="/compare" method="get"><button class="secondary" id="compare-models">'
            "Compare the ticked models</button> <span class=meta>two or more: lineage, recipe differences and eval "
            f"figures side by side</span></form>{pareto_section(s, entries, metric)}")
    return studio_page("Models", body, "/models")


def pareto_section(s, entries, metric: str | None) -> str:
    """The size / quality plot: one point per model that has the chosen figure, the Pareto front (no other model
    both smaller and better) marked and listed, the models without the figure named as not measured."""
    measured = gather(s.data_dir, entries)
    choices = metric_choices(measured)
    head = "<h2>Size, speed and quality</h2>"
    if not choices:
        return (f"{head}<p class=meta id=pareto-none>No model has a quality figure yet: a training run's validation "
                "loss, a <code>seedbed eval</code> job (held-out loss, accuracy) or a <code>seedbed compare</code> "
                "job (its speed too) over the models puts them here.</p>")
    metric = metric if metric in choices else choices[0]
    lower = lower_is_better(metric)
    have = {e.path: (e.size_bytes / 2**20, measured[e.path].metrics[metric]) for e in entries
            if metric in measured[e.path].metrics}
    front = pareto_front(have, lower)
    missing = [e.path for e in entries if e.path not in have]
    points = [ScatterPoint(path, size, value, speed_label(measured[path]), path in front)
              for path, (size, value) in have.items()]
    options = "".join(f'<option{" selected" if c == metric else ""}>{escape(c)}</option>' for c in choices)
    listed = "".join(f"<li><a href=\"/models/{escape(p)}\">{escape(p)}</a>: {have[p][0]:,.1f} MiB, {have[p][1]:.4g}"
                     f"{', ' + speed_label(measured[p]) if measured[p].speed else ''}</li>"
                     for p in sorted(front, key=lambda p: have[p][0]))
    unmeasured = (f'<p id="pareto-missing">Not measured ({escape(metric)}): '
                  f"{', '.join(f'<code>{escape(p)}</code>' for p in missing)}</p>" if missing else "")
    return (f'{head}<form method="get" action="/models"><label>Quality figure: <select name="metric" id="pareto-metric">'
            f'{options}</select></label> <button class="secondary">Show</button></form>'
            f"<p class=meta>{'Lower' if lower else 'Higher'} is better. Size: the files in the model's "
            "directory. Speed: decode tokens/s where a <code>seedbed compare</code> run measured it. By default the "
            "figure most models carry (a held-out loss first on a tie).</p>"
            f"{scatter_chart(points, 'size on disk (MiB)', metric)}"
            f'<h3>On the Pareto front</h3><p class=meta>No other model is both smaller and better.</p>'
            f'<ul id="pareto-front">{listed}</ul>{unmeasured}')


def speed_label(m) -> str:
    return f"{m.speed:,.1f} tok/s ({m.speed_engine or 'decode'})" if m.speed else ""


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
    card = card_html(card_file.read_text()) if card_file.is_file() else "<p class=meta>(no model card)</p>"
    serving = ""
    for job in s.scheduler.store.list(limit=50, states=("queued", "running")):
        if job.verb == "serve" and any(m.endswith("=" + entry.path) for m in json.loads(job.recipe)["model"]):
            url = served_url(s, job)
            where = f'<a class="served-url" href="{escape(url)}/models">{escape(url)}</a>' if url else "queued"
            serving += f'<li><a href="/jobs/{job.id}">job {job.id}</a>: {where}</li>'
    body = (f"<h1>Model <code>{escape(entry.path)}</code></h1><p>Lineage: {chain}</p>{data if entry.data else ''}"
            f'<p><a href="/playground?model={escape(entry.path)}"><button class="secondary">Chat with it</button></a> '
            f'<button id="serve-model" data-model="{escape(entry.path)}" data-name="{escape(served_name(entry.path))}">'
            f"Serve it</button> <span class=meta>a <code>seedbed serve</code> job on a free port (OpenAI-compatible, "
            f"localhost), running until cancelled</span></p>{f'<ul id=servers>{serving}</ul>' if serving else ''}"
            f'{export}<h3>Model card</h3><div id="model-card">{card}</div>')
    return studio_page(entry.path, body, "/models")
