"""The Datasets pages: upload a file (size-limited) or point at one on disk; its detected shape and fields; a field
mapping to edit (the recipe's `mapping`, read by the same `seedbed.data` readers the CLI uses); the first example
rendered through a model's chat template with the tokens training learns highlighted; and `data prepare` as a job,
whose datasheet opens on the job's page."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from seedbed.errors import SeedbedError
from seedbed.recipe import FieldMapping, validate
from seedbed.studio.layout import studio_page

router = APIRouter()
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
SAMPLE_RECORDS = 5  # records whose fields are listed
DEFAULT_TEMPLATE_MODEL = "gemma-3-270m"  # whose chat template the preview renders, unless the page names another


def uploads(data_dir: Path) -> Path:
    return data_dir / "datasets"


@router.get("/datasets", response_class=HTMLResponse)
def datasets_list(request: Request):
    s = request.app.state.studio
    files = sorted(p for p in uploads(s.data_dir).glob("*") if p.is_file()) if uploads(s.data_dir).is_dir() else []
    rows = "".join(f'<li><a href="/datasets/view?path=datasets/{escape(p.name)}">{escape(p.name)}</a> '
                   f'<span class=meta>{p.stat().st_size / 1024:,.1f} KiB</span></li>' for p in files)
    body = (f"<h1>Datasets</h1><h3>Upload</h3><p class=meta>JSONL, JSON, CSV or Parquet, up to "
            f"{s.max_upload_bytes / 2**20:,.0f} MiB (larger files: point at them on disk).</p>"
            f'<input type="file" id="upload-file" accept="{",".join(SUFFIXES)}"> <button id="upload-button">Upload</button>'
            f' <span id="upload-status"></span>'
            f'<h3>Or point at a file on this machine</h3><form action="/datasets/view" method="get">'
            f'<input name="path" size="60" placeholder="/path/to/train.jsonl"> <button>Open</button></form>'
            f"<h3>Uploaded</h3><ul id=datasets>{rows or '<li class=meta>none yet</li>'}</ul>")
    return studio_page("Datasets", body, "/datasets")


@router.put("/api/datasets/{name}")
async def upload(request: Request, name: str):
    """Store an upload in DATA_DIR/datasets/NAME, streamed, refused beyond the size limit (and never half-written)."""
    s = request.app.state.studio
    if not SAFE_NAME.match(name) or not name.endswith(SUFFIXES):
        return JSONResponse({"error": f"name: {name!r}: use letters, digits, . _ - and one of {', '.join(SUFFIXES)}"},
                            status_code=422)
    declared = int(request.headers.get("content-length") or 0)
    if declared > s.max_upload_bytes:
        return JSONResponse({"error": f"the file is {declared:,} bytes; the limit is {s.max_upload_bytes:,}"}, 413)
    target = uploads(s.data_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{name}.part")
    size = 0
    with open(partial, "wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > s.max_upload_bytes:
                handle.close()
                partial.unlink(missing_ok=True)
                return JSONResponse({"error": f"the upload passed the limit of {s.max_upload_bytes:,} bytes"}, 413)
            handle.write(chunk)
    partial.replace(target)
    return {"path": f"datasets/{name}", "bytes": size, "url": f"/datasets/view?path=datasets/{name}"}


def describe(path: str, data_dir: Path, mapping: FieldMapping | None) -> dict:
    """Shape, fields, record count and the first example of a data file, read as training reads it."""
    from seedbed.data.readers import Problem, read_examples, stream_records
    from seedbed.data.shapes import BadField, record_shape

    where = Path(path) if Path(path).is_absolute() else data_dir / path
    problems: list[Problem] = []
    fields: dict[str, None] = {}
    shape = None
    for i, (_, _, record) in enumerate(stream_records([where], problems)):
        if i >= SAMPLE_RECORDS:
            break
        if isinstance(record, dict):
            fields.update(dict.fromkeys(record))
            if shape is None:
                try:
                    shape = record_shape(record)
                except BadField as e:
                    shape = f"unknown ({e})"
    data = read_examples([where], mapping)  # raises DataError naming file:line: field
    return {"shape": "mapped" if mapping else shape, "detected": shape, "fields": list(fields),
            "examples": len(data.examples), "first": data.examples[0] if data.examples else None}


def highlighted(example, model: str) -> str:
    """The example as the model's chat template renders it; the tokens training learns (the answer and its end of
    turn, `chat.tokenize_example`'s mask) in green."""
    from seedbed.chat import tokenize_example
    from seedbed.models import load_tokenizer

    tokenizer = load_tokenizer(model)
    features = tokenize_example(tokenizer, example)
    spans, run, trained = [], [], None
    for token, mask in zip(features["input_ids"], features["assistant_masks"]):
        if trained is not None and mask != trained:
            spans.append((trained, run))
            run = []
        trained = mask
        run.append(token)
    spans.append((trained, run))
    return "".join(f'<span class="{"tok-trained" if m else "tok-context"}">{escape(tokenizer.decode(ids))}</span>'
                   for m, ids in spans if ids)


@router.get("/datasets/view", response_class=HTMLResponse)
def dataset_view(request: Request, path: str, prompt: str = "", response: str = "", response_json: str = "",
                 system: str = "", model: str = ""):
    s = request.app.state.studio
    mapping_fields = {k: v for k, v in {"prompt": prompt, "response": response, "system": system}.items() if v}
    if response_json:
        mapping_fields["response_json"] = [f.strip() for f in response_json.split(",") if f.strip()]
    body = f"<h1>Dataset <code>{escape(path)}</code></h1>"
    try:
        mapping = validate(FieldMapping, mapping_fields, "mapping") if mapping_fields else None
        info = describe(path, s.data_dir, mapping)
    except SeedbedError as e:
        info, mapping = None, None
        body += f'<p class="error" id="dataset-error">{escape(str(e))}</p>'
    if info:
        body += (f'<p>Shape: <b id="dataset-shape">{escape(str(info["shape"]))}</b> · '
                 f'<span id="dataset-count">{info["examples"]:,}</span> examples · fields: '
                 f"<code>{escape(', '.join(info['fields']))}</code></p>")
    body += mapping_form(path, prompt, response, response_json, system, model)
    if info and info["first"] is not None and not model:
        body += ('<p class=meta id="no-preview">Apply the mapping with a model named to see the first example '
                 "through its chat template (the first use of a model converts it once: minutes).</p>")
    elif info and info["first"] is not None:
        try:
            preview = highlighted(info["first"], model)
            body += (f"<h3>The first example as <code>{escape(model)}</code> sees it</h3><p class=meta>Green: the "
                     f'tokens training learns (the answer and its end of turn).</p><pre class="cmd" id="preview">'
                     f"{preview}</pre>")
        except SeedbedError as e:
            body += f'<p class="error">{escape(str(e))}</p>'
    stem = re.sub(r"[^A-Za-z0-9_-]", "-", Path(path).stem)
    body += (f'<h3>Prepare</h3><p class=meta>Curate it with <code>seedbed data prepare</code> (PII, toxicity, quality, '
             f"dedup, split) as a job; its datasheet opens on the job's page.</p>"
             f'<button id="prepare-button" data-path="{escape(path)}" data-out="runs/data-{escape(stem)}">'
             f"Prepare this dataset</button>")
    return studio_page("Dataset", body, "/datasets")


def mapping_form(path, prompt, response, response_json, system, model) -> str:
    def row(name, value, hint):
        return (f'<label for="m-{name}">{name}</label><input id="m-{name}" name="{name}" value="{escape(value)}" '
                f'size="60"><small>{hint}</small>')

    return (f'<h3>Field mapping</h3><p class=meta>Leave empty to read a known shape (dolly, alpaca, GSM8K, OpenAI chat, '
            f"...); or map your own fields with {{field}} templates.</p>"
            f'<form class="recipe" id="mapping-form" action="/datasets/view" method="get">'
            f'<input type="hidden" name="path" value="{escape(path)}">'
            + row("prompt", prompt, "the user turn, e.g. Turn this request into JSON: {text}")
            + row("response", response, "the answer as a template, e.g. {answer}")
            + row("response_json", response_json, "or the answer as JSON of these fields: intent, slots")
            + row("system", system, "an optional system turn")
            + row("model", model or DEFAULT_TEMPLATE_MODEL, "whose chat template the preview uses (a name or a model directory)")
            + '<span></span><button id="mapping-apply">Apply</button></form>')
