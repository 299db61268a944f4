"""Judged A/B: two or more models answer the same open prompts, a judge picks the better answer of every pair in
both orders, and win rates and ratings say which model to keep ("fine-tune or just prompt?").

    seedbed eval --judge gemma-3-270m --models base=gemma-3-270m --models tuned=runs/demo/model --limit 20 \
        --out runs/ab
    seedbed eval --judge http://127.0.0.1:8000/v1 --judge-model big --models base=... --models tuned=... \
        --prompts my_prompts.jsonl --votes votes.jsonl --out runs/ab

Prompts: MT-Bench's 80 questions (shipped), first turns only: a second turn needs the model's first answer in its
context and MT-Bench's multi-turn judge prompt, which we do not run. Or your own (`--prompts`, JSONL or CSV, the
text in `--prompt-field`, an `id` field naming it, else file:line). Each model answers greedily through
`seedbed.inference`, max_new_tokens from the recipe; answers are cached in `judge_answers.jsonl` in `--out`, so
a re-run answers only what is missing. Judgments go to the append-only store `judgments.jsonl` (`judgments.py`),
so a re-run asks only what is not stored. Figures: `pairwise_results.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from seedbed.atomic import append_line, check_output_dir, complete_lines, mark_output_dir
from seedbed.data.readers import Problem, data_error, stream_records
from seedbed.errors import EvalError
from seedbed.evaluate.judge import Judge, judge_for, pairwise_messages, read_verdict
from seedbed.evaluate.judgments import JudgmentStore, judgment_key, read_votes
from seedbed.evaluate.pairwise_results import summarize, write_results
from seedbed.evaluate.run import eval_inputs
from seedbed.models import parse_model_spec
from seedbed.recipe import EvalRecipe

MT_BENCH = "seedbed:data/mt_bench_questions.jsonl"
ANSWERS = "judge_answers.jsonl"
JUDGMENTS = "judgments.jsonl"


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    category: str = ""


def read_prompts(recipe: EvalRecipe) -> list[Prompt]:
    """The prompts to judge on: `recipe.prompts` (each record's `prompt_field`), or MT-Bench's first turns; the
    first `recipe.limit`. Every bad record is reported at once as file:line: field: problem.

    >>> [p.id for p in read_prompts(EvalRecipe(limit=2))]
    ['81', '82']
    """
    mt_bench = not recipe.prompts
    field = "turns" if mt_bench else recipe.prompt_field
    problems: list[Problem] = []
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    for file, line, record in stream_records([MT_BENCH] if mt_bench else recipe.prompts, problems):
        value = record.get(field) if isinstance(record, dict) else None
        text = value[0] if mt_bench and isinstance(value, list) and value else value
        if not isinstance(record, dict):
            problems.append(Problem(file, line, "-", "expected a record (a JSON object)"))
        elif not isinstance(text, str) or not text.strip():
            problems.append(Problem(file, line, field, "missing" if value is None else "not a non-empty string"))
        else:
            given = record.get("question_id" if mt_bench else "id")
            pid = f"{Path(file).name}:{line}" if given is None or str(given).strip() == "" else str(given)
            if pid in seen:
                problems.append(Problem(file, line, "id", f"{pid!r} also names the prompt at {seen[pid]}"))
            seen[pid] = f"{file}:{line}"
            prompts.append(Prompt(pid, text, str(record.get("category") or "")))
    if problems:
        raise data_error(problems)
    if not prompts:
        raise EvalError(f"{', '.join(recipe.prompts)}: no prompts to judge on")
    return prompts[: recipe.limit]


def answer_prompts(models: list[tuple[str, str]], prompts: list[Prompt], recipe: EvalRecipe,
                   out: Path) -> dict[str, dict[str, dict]]:
    """{model name: {prompt id: answer record}}: cached answers where the model, engine, max_new_tokens and prompt
    are the same, the rest generated (greedy, each model loaded once) and appended to the cache batch by batch."""
    from seedbed.chat import render_prompt
    from seedbed.inference import load
    from seedbed.inference.generate import generate_requests
    from seedbed.inference.stops import Sampling

    def key(r: dict) -> tuple:
        return r["model"], r["spec"], r["engine"], r["max_new_tokens"], r["prompt_id"], r["prompt"]

    cache = {}
    for line in complete_lines(out / ANSWERS):
        try:
            record = json.loads(line)
            cache[key(record)] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line a killed run garbled: answered again
    answers: dict[str, dict[str, dict]] = {}
    sampling = Sampling(greedy=True, max_new_tokens=recipe.max_new_tokens)
    for name, spec in models:
        base = {"model": name, "spec": spec, "engine": recipe.engine, "max_new_tokens": recipe.max_new_tokens}
        mine = {p.id: cache.get(key({**base, "prompt_id": p.id, "prompt": p.text})) for p in prompts}
        missing = [p for p in prompts if mine[p.id] is None]
        if missing:
            backend = load(spec, recipe.engine, recipe.threads)
            for start in range(0, len(missing), recipe.batch_size):
                batch = missing[start : start + recipe.batch_size]
                texts = [render_prompt(backend.tokenizer, [{"role": "user", "content": p.text}]) for p in batch]
                for p, done in zip(batch, generate_requests(backend, texts, sampling, recipe.batch_size)):
                    mine[p.id] = {**base, "prompt_id": p.id, "prompt": p.text, "answer": done.text,
                                  "finish_reason": done.finish_reason, "completion_tokens": done.completion_tokens}
                    append_line(out / ANSWERS, json.dumps(mine[p.id], ensure_ascii=False))
            del backend
        answers[name] = mine
    return answers


def pending_judgments(prompts: list[Prompt], names: list[str], answers: dict, judge_name: str,
                      store: JudgmentStore) -> list[dict]:
    """Every judgment this eval needs (each prompt, each pair, both orders) that the store has no reply for."""
    todo = []
    for p in prompts:
        for a, b in combinations(names, 2):
            for first, second in ((a, b), (b, a)):
                record = {"key": order_key(judge_name, p, first, second, answers), "judge": judge_name,
                          "prompt_id": p.id, "prompt": p.text, "first": first, "second": second,
                          "answer_first": answers[first][p.id]["answer"],
                          "answer_second": answers[second][p.id]["answer"]}
                if not store.has(record["key"]):
                    todo.append(record)
    return todo


def order_key(judge_name: str, p: Prompt, first: str, second: str, answers: dict) -> str:
    """The store key of one judgment: the judge, the prompt, the two models in the order shown and their answers
    (a changed answer is judged afresh)."""
    return judgment_key(judge_name, p.id, p.text, first, second, answers[first][p.id]["answer"],
                        answers[second][p.id]["answer"])


def ask_judge(judge: Judge, todo: list[dict], store: JudgmentStore, batch_size: int, progress=None) -> None:
    """Ask `judge` each pending judgment, `batch_size` at a time, storing each reply as it comes back."""
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        chats = [pairwise_messages(r["prompt"], r["answer_first"], r["answer_second"]) for r in batch]
        for record, reply in zip(batch, judge.ask(chats)):
            verdict, problem = read_verdict(reply)
            store.add({**record, "reply": reply.text, "verdict": verdict, "problem": problem,
                       "detail": reply.detail})
        if progress:
            progress(min(start + batch_size, len(todo)))


def store_votes(votes, prompts: list[Prompt], answers: dict, store: JudgmentStore) -> int:
    """Human votes into the store (`judge: "human"`), each once however often its file is given; the new count."""
    text = {p.id: p.text for p in prompts}
    added = 0
    for v in votes:
        key = judgment_key("human", v.source, v.prompt_id, v.model_a, v.model_b, v.winner)
        if key in store.records:
            continue
        store.add({"key": key, "judge": "human", "prompt_id": v.prompt_id, "prompt": text[v.prompt_id],
                   "first": v.model_a, "second": v.model_b,
                   "answer_first": answers[v.model_a][v.prompt_id]["answer"],
                   "answer_second": answers[v.model_b][v.prompt_id]["answer"],
                   "reply": None, "verdict": v.winner, "problem": None, "detail": v.source})
        added += 1
    return added


def judged_pairs(prompts: list[Prompt], names: list[str], answers: dict, judge_name: str,
                 store: JudgmentStore) -> list[dict]:
    """For each prompt and pair (a, b): the two answers and the stored judgments with a shown first and b first
    (None where not asked)."""
    pairs = []
    for p in prompts:
        for a, b in combinations(names, 2):
            pairs.append({"prompt_id": p.id, "model_a": a, "model_b": b,
                          "answer_a": answers[a][p.id]["answer"], "answer_b": answers[b][p.id]["answer"],
                          "a_first": store.records.get(order_key(judge_name, p, a, b, answers)),
                          "b_first": store.records.get(order_key(judge_name, p, b, a, answers))})
    return pairs


def human_votes(store: JudgmentStore, prompts: list[Prompt], names: list[str]) -> list[dict]:
    """The stored human votes (of this run or earlier ones) on this eval's prompts and models."""
    ids = {p.id for p in prompts}
    return [r for r in store.records.values()
            if r["judge"] == "human" and r["prompt_id"] in ids and r["first"] in names and r["second"] in names]


def judged_eval(recipe: EvalRecipe, judge: Judge | None = None, progress=None) -> dict:
    """Answer, judge, add the votes and write results.json / results.md into `recipe.out`; returns the results.
    `judge` (anything with `name` and `ask`) replaces the one `recipe.judge` names (tests script one).

    >>> judged_eval(EvalRecipe(judge="gemma-3-270m", models=["base=gemma-3-270m", "tuned=runs/demo/model"],
    ...                        limit=10, out="runs/ab"))  # doctest: +SKIP
    """
    if not recipe.out:
        raise EvalError("--judge needs --out: the directory caches answers and stores judgments for resuming")
    models = [parse_model_spec(spec) for spec in recipe.models]
    names = [name for name, _ in models]
    if len(set(names)) < 2 or len(set(names)) < len(names):
        raise EvalError(f"--judge compares two or more models with distinct names; got --models {recipe.models}")
    check_output_dir(recipe.out, eval_inputs(recipe))  # it caches into --out as it goes: never over an input
    out = Path(recipe.out)
    prompts = read_prompts(recipe)
    votes = read_votes(recipe.votes, names, {p.id for p in prompts})  # bad votes fail before any generation
    judge = judge or judge_for(recipe)  # an endpoint that cannot be reached fails before any answer is generated
    mark_output_dir(out)
    answers = answer_prompts(models, prompts, recipe, out)
    store = JudgmentStore(out / JUDGMENTS)
    ask_judge(judge, pending_judgments(prompts, names, answers, judge.name, store), store, recipe.batch_size,
              progress)
    store_votes(votes, prompts, answers, store)
    results = summarize(judged_pairs(prompts, names, answers, judge.name, store), human_votes(store, prompts, names),
                        names, recipe.bootstrap, recipe.seed)
    results.update(judge=judge.name, prompts=len(prompts), source=recipe.prompts or [MT_BENCH],
                   models=dict(models), unreadable_store_lines=store.unreadable)
    write_results(results, recipe, out)
    return results
