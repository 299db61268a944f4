"""`seedbed data synth`: Self-Instruct (Wang et al. 2023, "Self-Instruct: Aligning Language Models with
Self-Generated Instructions"; the recipe behind Stanford Alpaca) with any OpenAI-compatible teacher.

    seedbed data synth --teacher-url http://127.0.0.1:8000/v1 --licence "Gemma Terms of Use" --target 200 --out runs/synth

Each round shows the teacher 8 tasks from the pool (6 human-written seeds, 2 it wrote before) as a numbered list
and asks it to continue the list; every new task it writes is checked by the paper's filters, in order: length
(words), keywords (images, files, ... a text model cannot handle), a leading punctuation mark or non-ASCII
character, "Write a program" (Alpaca's), and novelty (ROUGE-L against every task in the pool, seeds and kept ones,
below 0.7; `rouge-score`, the package the paper used). A kept task joins the pool and is answered by the teacher
(greedy). Every kept record is written to out/synth.jsonl with its lineage (teacher URL and model, the exact
prompt, the licence, the round, the closest task in the pool); every rejected one to out/rejected.jsonl with its
reason, so candidates = kept + rejected. A round's records are final once its line is in out/rounds.jsonl: a run
killed mid-round resumes at that round (seeded, so it asks the same), and what the cut round wrote is dropped.
Finally `data prepare` curates synth.jsonl into out/prepared.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.data.readers import read_examples
from seedbed.data.teacher import TeacherClient
from seedbed.errors import RecipeError
from seedbed.recipe import SynthRecipe, save_recipe

KEPT, REJECTED, ROUNDS, REPORT = "synth.jsonl", "rejected.jsonl", "rounds.jsonl", "synth_report.json"
# Self-Instruct's generation prompt (its "Come up with a series of tasks:" list), asked as a chat turn.
PROMPT_HEAD = "Come up with a series of tasks:"
TASK_LINE = re.compile(r"^\s*(?:Task\s*)?(\d+)\s*[:.)]\s*(.*)$", re.I)


@dataclass
class SynthResult:
    out: Path
    report: dict


def generation_prompt(tasks: list[str]) -> str:
    """The round's prompt: the in-context tasks numbered, and the next number left open for the teacher.

    >>> print(generation_prompt(["Name a colour.", "Add 2 and 3."]))
    Come up with a series of tasks:
    Task 1: Name a colour.
    Task 2: Add 2 and 3.
    Task 3:
    """
    lines = [f"Task {i}: {' '.join(t.split())}" for i, t in enumerate(tasks, 1)]
    return "\n".join([PROMPT_HEAD, *lines, f"Task {len(tasks) + 1}:"])


def parse_tasks(reply: str) -> list[str]:
    """New tasks in the teacher's reply: numbered lines ("Task 9: ...", "10. ..."); text before the first number
    is the task for the slot the prompt left open. Lines that continue a task are joined to it.

    >>> parse_tasks("Write a haiku about rain.\\nTask 10: List three rivers.\\n11. Say hi")
    ['Write a haiku about rain.', 'List three rivers.', 'Say hi']
    """
    tasks: list[str] = []
    current: list[str] = []
    for line in reply.splitlines():
        if match := TASK_LINE.match(line):
            if current:
                tasks.append(" ".join(current))
            current = [match.group(2).strip()] if match.group(2).strip() else []
        elif line.strip():
            current.append(line.strip())
    if current:
        tasks.append(" ".join(current))
    return [t for t in (" ".join(t.split()) for t in tasks) if t]


class Filters:
    """Self-Instruct's filters on one candidate task; `reason` is None for a keeper."""

    def __init__(self, recipe: SynthRecipe, pool: list[str]):
        from rouge_score import rouge_scorer

        self.recipe = recipe
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.pool = list(pool)
        self.blocked = [re.compile(rf"\b{re.escape(w)}\b", re.I) for w in recipe.blocklist]

    def reason(self, task: str) -> tuple[str | None, dict]:
        words = len(task.split())
        if words < self.recipe.min_words:
            return "too_short", {"words": words}
        if words > self.recipe.max_words:
            return "too_long", {"words": words}
        for word, pattern in zip(self.recipe.blocklist, self.blocked):
            if pattern.search(task):
                return "keyword", {"keyword": word}
        if task[0] in string.punctuation:
            return "starts_with_punctuation", {}
        if not task[0].isascii():
            return "starts_non_ascii", {}
        if task.lower().startswith("write a program"):  # Alpaca: programs cannot be checked by reading them
            return "program", {}
        closest, score = self.closest(task)
        if score >= self.recipe.rouge_threshold:
            return "similar", {"rouge_l": round(score, 4), "similar_to": closest}
        return None, {"rouge_l": round(score, 4), "similar_to": closest}

    def closest(self, task: str) -> tuple[str | None, float]:
        best, best_score = None, 0.0
        for other in self.pool:
            score = self.scorer.score(other, task)["rougeL"].fmeasure
            if score > best_score:
                best, best_score = other, score
        return best, best_score

    def add(self, task: str) -> None:
        self.pool.append(task)


def synth(recipe: SynthRecipe, on_round=None) -> SynthResult:
    """Generate, filter and answer new tasks until `recipe.target` are kept (or `max_rounds` have run).

    >>> synth(SynthRecipe(teacher_url="http://127.0.0.1:8000/v1", target=20, out="runs/synth"))  # doctest: +SKIP
    SynthResult(out=PosixPath('runs/synth'), report={'kept': 20, ...})
    """
    if not recipe.teacher_url:
        raise RecipeError("teacher_url: give the teacher, an OpenAI-compatible server (--teacher-url http://host:port/v1)")
    if recipe.prompt_machine_tasks >= recipe.prompt_tasks:
        raise RecipeError("prompt_machine_tasks: must be fewer than prompt_tasks (the human-written seeds anchor each round)")
    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [e.messages[0]["content"] for e in read_examples(recipe.seeds).examples if e.messages[0]["role"] == "user"]
    if not seeds:
        raise RecipeError(f"seeds: no instructions in {', '.join(recipe.seeds)}")
    done_rounds, kept, rejected = resume_state(out)
    save_recipe(recipe, out / "recipe.yaml", "synth")
    teacher = TeacherClient(recipe.teacher_url, recipe.teacher_name, requests_per_s=recipe.requests_per_s,
                            timeout_s=recipe.timeout_s)
    filters = Filters(recipe, seeds + [r["instruction"] for r in kept])
    started = time.perf_counter()
    round_no = len(done_rounds)
    while len(kept) < recipe.target and round_no < recipe.max_rounds:
        rng = random.Random(f"{recipe.seed}:{round_no}")  # the same tasks for this round on every run
        machine = [r["instruction"] for r in kept]
        n_machine = min(recipe.prompt_machine_tasks, len(machine))
        shown = rng.sample(seeds, min(recipe.prompt_tasks - n_machine, len(seeds))) + rng.sample(machine, n_machine)
        prompt = generation_prompt(shown)
        reply = teacher.chat([{"role": "user", "content": prompt}], max_tokens=recipe.max_tokens,
                             temperature=recipe.temperature, seed=rng.randrange(2**31))
        candidates = parse_tasks(reply)
        new_kept, new_rejected = [], []
        for task in candidates:
            if len(kept) + len(new_kept) >= recipe.target:
                new_rejected.append({"instruction": task, "round": round_no, "reason": "over_target"})
                continue
            reason, detail = filters.reason(task)
            if reason:
                new_rejected.append({"instruction": task, "round": round_no, "reason": reason, **detail})
                continue
            answer = teacher.chat([{"role": "user", "content": task}], max_tokens=recipe.answer_max_tokens)
            if not answer.strip():
                new_rejected.append({"instruction": task, "round": round_no, "reason": "empty_answer"})
                continue
            filters.add(task)
            new_kept.append({
                "id": f"synth-{round_no}-{len(new_kept)}", "instruction": task, "input": "", "output": answer,
                "lineage": {"method": "self-instruct", "teacher_url": teacher.base, "teacher_model": teacher.model,
                            "licence": recipe.licence, "round": round_no, "prompt": prompt,
                            "answer_prompt": task, "closest_in_pool": detail["similar_to"],
                            "rouge_l": detail["rouge_l"]},
            })
        append_lines(out / KEPT, new_kept)
        append_lines(out / REJECTED, new_rejected)
        # Written last: the round counts as done only once all its records are on disk.
        round_line = {"round": round_no, "candidates": len(candidates), "kept": len(new_kept),
                      "rejected": len(new_rejected)}
        append_lines(out / ROUNDS, [round_line])
        done_rounds.append(round_line)
        kept += new_kept
        rejected += new_rejected
        round_no += 1
        if on_round:
            on_round(round_line, len(kept))
    report = {
        "teacher": {"url": teacher.base, "model": teacher.model, "licence": recipe.licence},
        "rounds": len(done_rounds), "requests_this_run": teacher.requests,
        "candidates": sum(r["candidates"] for r in done_rounds),
        "kept": len(kept), "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(r["reason"] for r in rejected).most_common()),
        "seeds": len(seeds), "target": recipe.target, "reached_target": len(kept) >= recipe.target,
        "seconds_this_run": round(time.perf_counter() - started, 2),
    }
    if recipe.prepare and kept:
        report["prepared"] = prepare_records(recipe, out)
    atomic_write_text(out / REPORT, json.dumps(report, indent=2))
    return SynthResult(out, report)


def resume_state(out: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """What finished rounds left: their round lines, kept and rejected records. Records of a round that has no
    line in rounds.jsonl (the run was killed in it) are dropped, and the files rewritten without them."""
    rounds = read_lines(out / ROUNDS)
    done = {r["round"] for r in rounds}
    kept = [r for r in read_lines(out / KEPT) if r["lineage"]["round"] in done]
    rejected = [r for r in read_lines(out / REJECTED) if r["round"] in done]
    for name, rows in ((KEPT, kept), (REJECTED, rejected), (ROUNDS, rounds)):
        if (out / name).exists():
            atomic_write_text(out / name, "".join(json.dumps(r) + "\n" for r in rows))
    return rounds, kept, rejected


def read_lines(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: it and anything after it belong to an unfinished round
    return rows


def append_lines(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()


def prepare_records(recipe: SynthRecipe, out: Path) -> dict:
    """`data prepare` with its default stages on the kept records (their lineage stays in each record)."""
    from seedbed.curate.prepare import prepare
    from seedbed.recipe import DataRecipe

    report = prepare(DataRecipe(inputs=[str(out / KEPT)], out=str(out / "prepared"), quiet=True, workers=1))
    return {"out": str(out / "prepared"), "kept": report["kept"], "dropped": report["dropped"]["total"]}
