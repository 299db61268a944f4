"""The judge: MT-Bench's pairwise prompt, reading its verdict, and the two ways to ask it (an OpenAI-compatible
endpoint through the official `openai` SDK, or a local model through the one decode path).

    judge = judge_for(recipe)                  # --judge http://127.0.0.1:8000/v1 or --judge gemma-3-270m
    replies = judge.ask([pairwise_messages(question, answer_a, answer_b)])
    verdict, problem = read_verdict(replies[0])

A reply is "A", "B" or "tie" ([[C]]), or it has a problem: "malformed" (no verdict, or more than one kind of
verdict: a judge that echoes the format line `[[A]] ... [[B]] ... [[C]]` has not chosen), "refusal" (the API says
so, or a reply without a verdict that declines), "timeout" or "http" (no reply after the retries). A problem is
counted, never raised: one bad reply does not end a run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Protocol

from seedbed.errors import EvalError

# MT-Bench's pairwise judge prompt ("pair-v2"), verbatim from lm-sys/FastChat
# fastchat/llm_judge/data/judge_prompts.jsonl (Apache-2.0; Zheng et al. 2023, "Judging LLM-as-a-Judge").
SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to "
    "the user question displayed below. You should choose the assistant that follows the user's instructions and "
    "answers the user's question better. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by "
    "comparing the two responses and provide a short explanation. Avoid any position biases and ensure that the "
    "order in which the responses were presented does not influence your decision. Do not allow the length of the "
    "responses to influence your evaluation. Do not favor certain names of the assistants. Be as objective as "
    "possible. After providing your explanation, output your final verdict by strictly following this format: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
USER = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's "
    "Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
VERDICTS = {"[[A]]": "A", "[[B]]": "B", "[[C]]": "tie"}
_VERDICT = re.compile(r"\[\[([ABC])\]\]")
# Replies without a verdict that decline to judge (a refusal, not a format slip).
_REFUSAL = re.compile(r"\b(I can(no|')t|I am (not able|unable)|I'm (not able|unable)|I won't|I will not|as an AI)\b"
                      r"|\bI'm sorry\b|\bI apologi[sz]e\b", re.IGNORECASE)


@dataclass
class Reply:
    """What one judge request came back with: its text, or why there is none."""

    text: str | None
    problem: str | None = None  # "refusal" (said by the API), "timeout" or "http"; None: the text is the reply
    detail: str = ""  # the error's message, for the store


class Judge(Protocol):
    """Anything that answers a batch of chats (each a list of {role, content}) with one `Reply` each."""

    name: str

    def ask(self, chats: list[list[dict[str, str]]]) -> list[Reply]: ...


def pairwise_messages(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """The chat a judge is asked: MT-Bench's system prompt, then the question and the two answers.

    >>> [m["role"] for m in pairwise_messages("2+2?", "4", "5")]
    ['system', 'user']
    """
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER.format(question=question, answer_a=answer_a, answer_b=answer_b)}]


def read_verdict(reply: Reply) -> tuple[str | None, str | None]:
    """(verdict, problem): the verdict "A", "B" or "tie" and no problem, or no verdict and the problem.

    >>> read_verdict(Reply("A is more accurate. [[A]]"))
    ('A', None)
    >>> read_verdict(Reply("Both are fine. Final verdict: [[C]]"))
    ('tie', None)
    >>> read_verdict(Reply('"[[A]]" if assistant A is better, "[[B]]" if B'))
    (None, 'malformed')
    >>> read_verdict(Reply("I'm sorry, I cannot compare these."))
    (None, 'refusal')
    """
    if reply.problem is not None:
        return None, reply.problem
    found = {VERDICTS[f"[[{m}]]"] for m in _VERDICT.findall(reply.text or "")}
    if len(found) == 1:
        return found.pop(), None
    if not found and _REFUSAL.search(reply.text or ""):
        return None, "refusal"
    return None, "malformed"


# A verdict and nothing else, as a JSON string ("[[A]]"): what `--judge-verdict-only` constrains a judge's reply to.
# The reply still parses as every other (`parse_verdict` finds the one marker in it), so the store and the ratings do
# not care how a verdict was obtained; the judge's name says it (judgments are kept per judge).
VERDICT_SCHEMA = {"type": "string", "enum": ["[[A]]", "[[B]]", "[[C]]"]}
VERDICT_ONLY = " (verdict only)"


class EndpointJudge:
    """A judge behind an OpenAI-compatible chat API (a `seedbed serve`, llama-server, a provider), asked through the
    official `openai` SDK: greedy (temperature 0), `timeout` seconds per request and `retries` retries (the SDK's
    own, with its backoff) before a reply counts as "timeout" or "http"."""

    def __init__(self, url: str, model: str | None, api_key: str | None, timeout: float, retries: int,
                 max_tokens: int, verdict_only: bool = False):
        try:
            import openai
        except ImportError:
            raise EvalError("--judge URL needs the openai package: pip install 'seedbed[judge]'") from None
        self.openai = openai
        self.client = openai.OpenAI(base_url=url, api_key=api_key or "none", timeout=timeout, max_retries=retries)
        self.max_tokens = max_tokens
        self.model = model or self._first_model(url)
        self.name = f"{url} ({self.model})" + (VERDICT_ONLY if verdict_only else "")
        self.extra = {"response_format": {"type": "json_schema", "json_schema": {
            "name": "verdict", "schema": VERDICT_SCHEMA}}} if verdict_only else {}

    def _first_model(self, url: str) -> str:
        try:
            models = [m.id for m in self.client.models.list()]
        except self.openai.OpenAIError as e:
            raise EvalError(f"--judge {url}: cannot list its models ({e}); name one with --judge-model") from None
        if not models:
            raise EvalError(f"--judge {url}: the endpoint lists no models; name one with --judge-model")
        return models[0]

    def ask(self, chats: list[list[dict[str, str]]]) -> list[Reply]:
        return [self._ask_one(chat) for chat in chats]

    def _ask_one(self, chat: list[dict[str, str]]) -> Reply:
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=chat, temperature=0, max_tokens=self.max_tokens, **self.extra)
        except self.openai.APITimeoutError as e:
            return Reply(None, "timeout", str(e))
        except self.openai.OpenAIError as e:  # status errors, connection errors, unreadable bodies
            return Reply(None, "http", str(e))
        if not response.choices:
            return Reply(None, "http", "the reply has no choices")
        choice = response.choices[0]
        refusal = getattr(choice.message, "refusal", None)
        if refusal or choice.finish_reason == "content_filter":
            return Reply(refusal or choice.message.content, "refusal", choice.finish_reason or "")
        return Reply(choice.message.content or "")


class LocalJudge:
    """A local model (a name, a directory or a .gguf) as the judge, run through `seedbed.inference` like every
    model that answers: greedy, `max_tokens` new tokens, `batch_size` chats at a time."""

    def __init__(self, model: str, engine: str, threads: int | None, max_tokens: int, batch_size: int,
                 verdict_only: bool = False):
        from seedbed.inference import load
        from seedbed.inference.stops import Sampling

        self.backend = load(model, engine, threads)
        self.sampling = Sampling(greedy=True, max_new_tokens=max_tokens,
                                 json_schema=VERDICT_SCHEMA if verdict_only else None)
        self.batch_size = batch_size
        self.name = model + (VERDICT_ONLY if verdict_only else "")

    def ask(self, chats: list[list[dict[str, str]]]) -> list[Reply]:
        from seedbed.chat import render_prompt
        from seedbed.inference.generate import generate

        prompts = [render_prompt(self.backend.tokenizer, chat) for chat in chats]
        return [Reply(text) for text in generate(self.backend, prompts, self.sampling, self.batch_size)]


def is_url(judge: str) -> bool:
    return judge.startswith(("http://", "https://"))


def judge_for(recipe) -> Judge:
    """The judge `recipe.judge` names: an endpoint for an http(s) URL (key from `recipe.judge_key_env`), else a
    local model."""
    if is_url(recipe.judge):
        return EndpointJudge(recipe.judge, recipe.judge_model, os.environ.get(recipe.judge_key_env),
                             recipe.judge_timeout, recipe.judge_retries, recipe.judge_max_tokens,
                             recipe.judge_verdict_only)
    return LocalJudge(recipe.judge, recipe.engine, recipe.threads, recipe.judge_max_tokens, recipe.batch_size,
                      recipe.judge_verdict_only)
