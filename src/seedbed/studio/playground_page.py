"""The Playground page: chat with a registered model (streamed), and a blind A/B of two models on one prompt
whose votes feed a Bradley–Terry leaderboard (seedbed.studio.playground)."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from typing import Literal

from pydantic import BaseModel, Field

from seedbed.errors import SeedbedError
from seedbed.studio.layout import studio_page
from seedbed.studio.playground import ABPairs, LoadedModels
from seedbed.studio.registry import find_models

router = APIRouter()
MAX_CHARS = 8000  # a message, and the A/B prompt
MAX_TURNS = 40


class ChatBody(BaseModel):
    model: str = Field(max_length=1000)
    messages: list[dict[str, str]] = Field(min_length=1, max_length=MAX_TURNS)
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(128, ge=1, le=1024)
    seed: int | None = None
    json_mode: bool = False  # the answer is a JSON object (constrained decoding)
    tools: list[Literal["calculator"]] = Field(default_factory=list, max_length=1)


class ABBody(BaseModel):
    prompt: str = Field(min_length=1, max_length=MAX_CHARS)
    models: tuple[str, str]
    max_tokens: int = Field(128, ge=1, le=1024)


def parts(request: Request) -> tuple[LoadedModels, ABPairs]:
    s = request.app.state.studio
    if "loaded" not in s.models:
        s.models["loaded"], s.models["pairs"] = LoadedModels(s.data_dir), ABPairs(s.data_dir)
    return s.models["loaded"], s.models["pairs"]


def sampling_for(temperature: float, max_tokens: int, seed: int | None = None, json_mode: bool = False):
    from seedbed.inference.stops import JSON_OBJECT, Sampling

    return Sampling(max_new_tokens=max_tokens, temperature=temperature, greedy=temperature == 0, seed=seed,
                    json_schema=JSON_OBJECT if json_mode else None)


@router.get("/playground", response_class=HTMLResponse)
def playground(request: Request, model: str = ""):
    s = request.app.state.studio
    names = [e.path for e in find_models(s.data_dir)]
    if model and model not in names:
        names.insert(0, model)

    def select(element_id: str, chosen: str) -> str:
        options = "".join(f"<option{' selected' if n == chosen else ''}>{escape(n)}</option>" for n in names)
        return f'<select id="{element_id}">{options}</select>'

    board = leaderboard_html(parts(request)[1])
    body = (f"<h1>Playground</h1><h3>Chat</h3><p>Model {select('chat-model', model)} temperature "
            f'<input id="chat-temperature" value="0.7" size="4"> max tokens <input id="chat-max-tokens" value="128" '
            f'size="5"> <label><input type="checkbox" id="chat-json"> JSON mode</label> <label><input type="checkbox" '
            f'id="chat-calculator"> calculator tool</label> <button class="secondary" id="chat-reset">New chat</button>'
            f"</p>"
            f'<div class="chat" id="chat-log"></div><p><textarea id="chat-input" rows="2" maxlength="{MAX_CHARS}" '
            f'placeholder="Ask something"></textarea><button id="chat-send">Send</button></p>'
            f"<h2>Blind A/B</h2><p class=meta>Two models answer the same prompt, in a random order; vote for the better "
            f"answer. Votes go to the evaluation store ({escape(str(s.data_dir / 'votes.jsonl'))}) and the "
            f"leaderboard below.</p><p>{select('ab-model-1', names[0] if names else '')} vs "
            f"{select('ab-model-2', names[1] if len(names) > 1 else '')}</p>"
            f'<textarea id="ab-prompt" rows="2" maxlength="{MAX_CHARS}" placeholder="A prompt for both"></textarea>'
            f'<p><button id="ab-ask">Ask both</button></p><div class="ab" id="ab-answers" hidden><div><h3>A</h3>'
            f'<div class="chat" id="ab-a"></div><button data-vote="A">A is better</button></div><div><h3>B</h3>'
            f'<div class="chat" id="ab-b"></div><button data-vote="B">B is better</button></div></div>'
            f'<p><button class="secondary" data-vote="tie" id="ab-tie" hidden>Tie</button> <span id="ab-result"></span>'
            f'</p><h3>Leaderboard</h3><div id="leaderboard">{board}</div>')
    return studio_page("Playground", body, "/playground")


def leaderboard_html(pairs: ABPairs) -> str:
    rows = pairs.leaderboard()
    if not rows:
        return '<p class=meta id="no-votes">No votes yet.</p>'
    body = "".join(f"<tr><td>{escape(r['model'])}</td><td class=n>{r['rating']:.0f}</td><td class=n>"
                   f"{r['low']:.0f} – {r['high']:.0f}</td><td class=n>{r['votes']}</td></tr>" for r in rows)
    return ("<table><thead><tr><th>model</th><th>Bradley–Terry rating</th><th>95% interval</th><th>votes</th></tr>"
            f"</thead><tbody>{body}</tbody></table>")


@router.post("/api/chat")
def chat(request: Request, body: ChatBody):
    """The answer, streamed as plain text pieces (fetch reads them as they come)."""
    if any(len(m.get("content", "")) > MAX_CHARS for m in body.messages):
        return JSONResponse({"error": f"messages: a message is longer than {MAX_CHARS} characters"}, 422)
    loaded, _ = parts(request)
    try:
        loaded.backend(body.model)  # load (and fail) before the stream starts, so an error is a status code
    except (SeedbedError, OSError) as e:
        return JSONResponse({"error": f"model: {e}"}, 422)
    if body.json_mode and body.tools:  # as the server answers: a schema and the calculator's insertions conflict
        return JSONResponse({"error": "json_mode: JSON mode cannot be combined with the calculator tool; choose one"},
                            422)
    sampling = sampling_for(body.temperature, body.max_tokens, body.seed, body.json_mode)
    pieces = loaded.chat(body.model, body.messages, sampling, calculator="calculator" in body.tools)
    return StreamingResponse(pieces, media_type="text/plain; charset=utf-8")


@router.post("/api/ab")
def ab(request: Request, body: ABBody):
    loaded, pairs = parts(request)
    try:
        sampling = sampling_for(0.7, body.max_tokens)
        answers = {m: loaded.answer(m, body.prompt, sampling) for m in dict.fromkeys(body.models)}
        return pairs.new(body.prompt, body.models, answers)
    except (SeedbedError, OSError) as e:
        return JSONResponse({"error": str(e)}, 422)


@router.post("/api/ab/{pair_id}/vote")
async def vote(request: Request, pair_id: str):
    _, pairs = parts(request)
    winner = (await request.json()).get("winner", "")
    try:
        record = pairs.vote(pair_id, str(winner))
    except SeedbedError as e:
        return JSONResponse({"error": str(e)}, 422)
    return {"model_a": record["model_a"], "model_b": record["model_b"], "leaderboard": leaderboard_html(pairs)}
