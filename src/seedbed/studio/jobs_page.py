"""The Jobs pages: the queue and past runs, a form that is the recipe (its YAML and command shown as you type), and
a job's page: state, progress, tokens/s, ETA, train/validation loss curves (earlier runs beneath), log, cancel."""

from __future__ import annotations

import json
import socket
import time
import typing
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from seedbed.cli_flags import flag_type
from seedbed.errors import SeedbedError
from seedbed.html_page import table
from seedbed.studio import runner
from seedbed.studio.charts import loss_chart
from seedbed.studio.estimate import estimate_distill, estimate_finetune, finished_training_runs
from seedbed.studio.layout import state_badge, studio_page
from seedbed.studio.progress import log_tail, read_progress
from seedbed.studio.store import Job
from seedbed.studio.verbs import VERBS, build_recipe, recipe_yaml, shell_command, verb_of

router = APIRouter()
PAST_RUNS = 3  # earlier runs of the same verb drawn beneath a job's curves


def studio(request: Request):
    return request.app.state.studio


@router.get("/jobs", response_class=HTMLResponse)
def jobs_list(request: Request):
    s = studio(request)
    rows = "".join(job_row(job) for job in s.scheduler.store.list())
    new = " ".join(f'<a href="/jobs/new?verb={v}"><button class="secondary">{escape(verb.title)}</button></a>'
                   for v, verb in VERBS.items())
    body = (f"<h1>Jobs</h1><p class=meta>One job runs at a time; the rest wait in the queue. Each is its own process: "
            f"close the tab or restart the studio and it keeps running.</p><p>New job: {new}</p>"
            f'<table id="jobs"><thead><tr><th>#</th><th>verb</th><th>state</th><th>output</th><th>started</th>'
            f"<th>took</th></tr></thead><tbody>{rows}</tbody></table>")
    return studio_page("Jobs", body, "/jobs")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def served_url(s, job: Job) -> str | None:
    """Where a running `serve` job answers (its OpenAI base URL), else None."""
    if job.verb != "serve" or job.state != "running":
        return None
    recipe = json.loads(job.recipe)
    host = "127.0.0.1" if recipe["host"] in ("0.0.0.0", "::", "") else recipe["host"]
    host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    return f"http://{host}:{recipe['port']}/v1"


def job_row(job: Job) -> str:
    took = (job.finished or time.time()) - job.started if job.started else None
    return (f'<tr><td><a href="/jobs/{job.id}">{job.id}</a></td><td>{escape(job.verb)}</td><td>{state_badge(job.state)}'
            f"</td><td><code>{escape(job.out or '')}</code></td><td>{when(job.started)}</td>"
            f"<td>{'' if took is None else duration(took)}</td></tr>")


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


@router.get("/jobs/new", response_class=HTMLResponse)
def new_job(request: Request, verb: str = "finetune"):
    spec = verb_of(verb)
    given = dict(request.query_params)
    inputs = "".join(field_input(name, field, given.get(name)) for name, field in spec.recipe.model_fields.items())
    body = (f"<h1>{escape(spec.title)}</h1><p class=meta>The form is the recipe: every field of "
            f"<code>seedbed {' '.join(spec.words)}</code>; empty fields keep their defaults. Relative paths are "
            f"inside the studio's data directory.</p>"
            f'<form class="recipe" id="recipe-form" data-verb="{escape(verb)}">{inputs}</form>'
            f'<p><button id="submit-job">Start (queue) this job</button></p><p id="recipe-error" class="error"></p>'
            f'<h3>Before it starts: time and cost</h3><div id="recipe-estimate"></div>'
            f'<h3>The same job from a terminal</h3><pre class="cmd" id="recipe-command"></pre>'
            f'<h3>recipe.yaml</h3><pre class="cmd" id="recipe-yaml"></pre>')
    return studio_page(spec.title, body, "/jobs")


def field_input(name: str, field, value: str | None) -> str:
    """One form row for a recipe field (nested sections are left to the recipe file and their defaults)."""
    kind = flag_type(field.annotation)
    if kind is None:
        return ""
    default = field.get_default(call_default_factory=True)
    label = f'<label for="f-{name}">{escape(name)}</label>'
    attrs = f'id="f-{name}" name="{name}" data-field="{name}"'
    literal = literal_choices(field.annotation)
    if kind is bool:
        checked = " checked" if (value in ("1", "true", "on") if value is not None else default) else ""
        control = f'<input type="checkbox" {attrs} data-kind="bool"{checked}>'
    elif literal:
        current = value if value is not None else default
        options = "".join(f'<option{" selected" if str(c) == str(current) else ""}>{escape(str(c))}</option>'
                          for c in literal)
        control = f'<select {attrs} data-kind="scalar">{options}</select>'
    elif typing.get_origin(kind) is list:
        text = value if value is not None else "\n".join(map(str, default or []))
        control = f'<textarea rows="2" {attrs} data-kind="list" placeholder="one per line">{escape(text)}</textarea>'
    else:
        shown = value if value is not None else ("" if default is None else str(default))
        control = f'<input {attrs} data-kind="scalar" value="{escape(shown)}" placeholder="(none)">'
    return f"{label}{control}<small>{escape(field.description or '')}</small>"


def literal_choices(annotation) -> tuple | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return typing.get_args(candidate)
    return None


@router.post("/api/recipe")
async def preview_recipe(request: Request):
    """The validated recipe's YAML and command for form fields, or the error naming the field."""
    body = await request.json()
    try:
        recipe = build_recipe(body.get("verb", ""), body.get("fields", {}), studio(request).data_dir)
    except SeedbedError as e:
        return JSONResponse({"error": str(e)}, status_code=422)
    return {"yaml": recipe_yaml(body["verb"], recipe), "command": shell_command(body["verb"], recipe),
            "estimate": estimate_html(studio(request), body["verb"], recipe)}


def estimate_html(s, verb: str, recipe) -> str:
    """The time and cost a fine-tuning or distillation job will take, as a table (seedbed.studio.estimate), or why
    there is none."""
    estimator = {"finetune": estimate_finetune, "distill": estimate_distill}.get(verb)
    if estimator is None:
        return ""
    runs = finished_training_runs(s.data_dir, s.scheduler.store.list(limit=50, states=("done",)))
    try:
        rows = estimator(recipe, s.data_dir, runs).rows()
    except SeedbedError as e:
        return f'<p class=meta>No estimate yet: {escape(str(e))}</p>'
    return table(["estimate", ""], rows)


@router.post("/api/jobs")
async def submit_job(request: Request):
    body = await request.json()
    s = studio(request)
    try:
        recipe = build_recipe(body.get("verb", ""), body.get("fields", {}), s.data_dir)
    except SeedbedError as e:
        return JSONResponse({"error": str(e)}, status_code=422)
    if verb_of(body["verb"]).service and "port" not in body.get("fields", {}):
        recipe.port = free_port()  # a server from the studio gets a port nothing else holds, not serve's 8000
    job_id = s.scheduler.submit(body["verb"], recipe)
    s.scheduler.tick()  # start it now if nothing else runs
    return {"id": job_id, "url": f"/jobs/{job_id}"}


@router.post("/api/jobs/{job_id}/cancel")
def cancel_job(request: Request, job_id: int):
    return {"cancelled": studio(request).scheduler.cancel(job_id)}


@router.get("/api/jobs/{job_id}")
def job_json(request: Request, job_id: int):
    s = studio(request)
    job = s.scheduler.store.get(job_id)
    if job is None:
        return JSONResponse({"error": f"no job {job_id}"}, status_code=404)
    progress = read_progress(s.data_dir / job.out if job.out else None)
    return {**job.__dict__, "step": progress.step, "max_steps": progress.max_steps, "train": progress.train,
            "val": progress.val, "tokens_per_s": progress.tokens_per_s, "eta_s": progress.eta_s}


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: int):
    s = studio(request)
    job = s.scheduler.store.get(job_id)
    if job is None:
        return HTMLResponse(studio_page("No such job", f"<h1>No job {job_id}</h1>"), status_code=404)
    recipe = build_recipe(job.verb, json.loads(job.recipe), s.data_dir)
    body = (f"<h1>Job {job.id}: {escape(verb_of(job.verb).title)}</h1>"
            f'<div id="live" data-poll="/jobs/{job.id}/live">{live_fragment(s, job)}</div>'
            f"<h3>The same job from a terminal</h3><pre class=cmd>{escape(shell_command(job.verb, recipe))}</pre>"
            f"<details><summary>recipe.yaml</summary><pre>{escape(recipe_yaml(job.verb, recipe, full=True))}</pre>"
            f"</details>")
    return studio_page(f"Job {job.id}", body, "/jobs")


@router.get("/jobs/{job_id}/live", response_class=HTMLResponse)
def job_live(request: Request, job_id: int):
    s = studio(request)
    job = s.scheduler.store.get(job_id)
    return live_fragment(s, job) if job else HTMLResponse("", status_code=404)


def live_fragment(s, job: Job) -> str:
    """What changes while a job runs: state, progress, ETA, curves, the log's tail (re-fetched by studio.js)."""
    out = s.data_dir / job.out if job.out else None
    progress = read_progress(out)
    facts = [state_badge(job.state)]
    if progress.max_steps:
        facts.append(f"step {progress.step} / {progress.max_steps}")
    if progress.tokens_per_s:
        facts.append(f"{progress.tokens_per_s:,.0f} tokens/s")
    if job.state == "running" and progress.eta_s is not None:
        facts.append(f"ETA {duration(progress.eta_s)}")
    if (url := served_url(s, job)):
        facts.append(f'serving at <a id="served-url" href="{escape(url)}/models">{escape(url)}</a> (OpenAI-compatible)')
    if job.reason:
        facts.append(f'<span class="error">{escape(job.reason)}</span>')
    bar = f'<div class="bar"><i style="width:{progress.fraction * 100:.1f}%"></i></div>' if progress.max_steps else ""
    cancel = (f'<button class="danger" data-cancel="{job.id}">Cancel</button>'
              if job.state in ("queued", "running") else "")
    chart = ""
    if progress.train or progress.val or job.verb in ("finetune", "distill"):
        series = {"train": progress.train, "validation": progress.val}
        chart = "<h3>Loss (log scale)</h3>" + loss_chart(series, past_curves(s, job))
    links = artefact_links(s, job) + datasheet(job)
    log = escape(log_tail(s.scheduler.job_dir(job.id) / runner.LOG_FILE))
    return (f'<p id="job-state" data-state="{job.state}">{" · ".join(facts)} {cancel}</p>{bar}{chart}{links}'
            f'<h3>Log</h3><pre class="log" id="job-log">{log}</pre>')


def past_curves(s, job: Job) -> dict[str, list]:
    """Train curves of the last few finished runs of the same verb, drawn grey beneath this one."""
    past = [j for j in s.scheduler.store.list(limit=50, states=("done",)) if j.verb == job.verb and j.id < job.id]
    return {f"job {j.id}": read_progress(s.data_dir / j.out).train for j in past[:PAST_RUNS] if j.out}


def datasheet(job: Job) -> str:
    """A finished `data prepare` job's datasheet (funnel, reasons, histograms, duplicates, leakage), in the page."""
    if job.verb != "prepare" or job.state != "done" or not job.out:
        return ""
    return (f'<h3>Datasheet</h3><iframe id="datasheet" src="/files/{escape(job.out)}/report.html" '
            'class="datasheet"></iframe>')


def artefact_links(s, job: Job) -> str:
    if job.state != "done" or not job.out:
        return ""
    out: Path = s.data_dir / job.out
    links = [f'<a href="/files/{escape(job.out)}/{name}">{name}</a>'
             for name in ("report.html", "README.md", "metrics.json", "quantize.json", "results.md") if (out / name).is_file()]
    if (out / "config.json").is_file() or list(out.glob("*.gguf")):
        links.append(f'<a href="/models/{escape(job.out)}">the model</a>')
    return f"<p>Output in <code>{escape(job.out)}</code>: {' · '.join(links)}</p>" if links else ""
