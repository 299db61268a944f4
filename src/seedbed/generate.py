"""Text generation: batched completions, token-by-token streaming, one-shot answers and a terminal chat.

    seedbed generate --model runs/demo/model "What is 12 plus 30?"
    seedbed chat --model runs/demo/model --system "Answer briefly."
    seedbed generate --engine llama.cpp --model runs/q4 "What is 12 plus 30?"

Prompts given to `generate` and `stream` are already rendered (chat template applied, BOS included), so they
are tokenized without adding special tokens again. Both stop at the model's end-of-turn tokens (set by
`seedbed.models.load_model`) and at stop strings: the recipe's `stop` plus the template's end-of-turn marker.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from seedbed.chat import end_of_turn_strings, render_prompt
from seedbed.recipe import GenerateRecipe


@dataclass
class Sampling:
    """How to pick tokens. Greedy when `greedy` is set or `temperature` is 0."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    greedy: bool = False
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @classmethod
    def from_recipe(cls, r: GenerateRecipe) -> "Sampling":
        return cls(r.max_new_tokens, r.temperature, r.top_p, r.greedy, list(r.stop), r.seed)

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


def generate(model, tokenizer, prompts: list[str], sampling: Sampling, batch_size: int = 8,
             progress: Callable[[int], None] | None = None) -> list[str]:
    """Complete rendered prompts, in batches; each text is cut before its first stop string.

    >>> model, tok = load_model("gemma-3-270m")  # doctest: +SKIP
    >>> generate(model, tok, [render_prompt(tok, [{"role": "user", "content": "Hi"}])], Sampling(greedy=True))  # doctest: +SKIP
    ['Hello! How can I help you today?']
    """
    stops = stop_strings(tokenizer, sampling)
    stop_ids = set(_stop_token_ids(model, tokenizer, stops))
    kwargs = _generate_kwargs(model, tokenizer, sampling, stops)
    _seed(sampling)
    texts: list[str] = []
    with _left_padding(tokenizer):
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**batch, **kwargs)
            for row in out[:, batch["input_ids"].shape[1] :].tolist():
                # Rows that finished early are padded after their stop token; drop everything past it.
                end = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
                texts.append(cut_at_stop(tokenizer.decode(row[:end], skip_special_tokens=True), stops))
            if progress:
                progress(len(texts))
    return texts


def stream(model, tokenizer, prompt: str, sampling: Sampling) -> Iterator[str]:
    """Yield the completion of one rendered prompt piece by piece; joined, the pieces equal `generate`'s text.

    Text that could be the start of a stop string is held back until it is clear that it is not one.

    >>> for piece in stream(model, tok, prompt, Sampling(greedy=True)):  # doctest: +SKIP
    ...     print(piece, end="", flush=True)
    """
    from transformers import TextIteratorStreamer

    stops = stop_strings(tokenizer, sampling)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = tokenizer([prompt], return_tensors="pt", add_special_tokens=False).to(model.device)
    failure: list[BaseException] = []

    def run():
        try:
            with torch.no_grad():
                model.generate(**inputs, **_generate_kwargs(model, tokenizer, sampling, stops), streamer=streamer)
        except BaseException as e:  # re-raised in the caller's thread, after the streamer is released
            failure.append(e)
            streamer.end()

    _seed(sampling)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    text, shown, stopped = "", 0, False
    for piece in streamer:
        if stopped:
            continue  # let the generating thread finish on its own
        text += piece
        cut = cut_at_stop(text, stops)
        stopped = len(cut) < len(text)
        safe = len(cut) if stopped else len(text) - pending_stop_prefix(text, stops)
        if safe > shown:
            yield text[shown:safe]
            shown = safe
    thread.join()
    if failure:
        raise failure[0]
    if not stopped and shown < len(text):  # held-back text that never became a stop string
        yield text[shown:]


def run_generate(recipe: GenerateRecipe, prompt: str, write: Callable[[str], None] | None = None) -> str:
    """Load `recipe.model` and answer one prompt (as a chat turn unless `recipe.raw`); stream to `write` if given.

    >>> run_generate(GenerateRecipe(model="runs/demo/model", greedy=True), "What is 2 plus 3?")  # doctest: +SKIP
    '2 plus 3 is 5.\\n#### 5'
    """
    tokenizer, complete, stream_one = _load(recipe)
    if recipe.raw:
        # Plain continuation: the text gets the BOS a template would have written.
        bos = tokenizer.bos_token or ""
        text = prompt if prompt.startswith(bos) else bos + prompt
    else:
        text = render_prompt(tokenizer, _system(recipe) + [{"role": "user", "content": prompt}])
    if write is None:
        return complete(text, Sampling.from_recipe(recipe))
    answer = ""
    for piece in stream_one(text, Sampling.from_recipe(recipe)):
        answer += piece
        write(piece)
    return answer


def _print(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_chat(recipe: GenerateRecipe, read: Callable[[str], str] = input, write: Callable[[str], None] = _print) -> None:
    """Chat in the terminal: answers stream token by token and the conversation is remembered.

    `/reset` forgets the conversation; `/exit` or end of input (Ctrl-D) ends the chat.

    >>> run_chat(GenerateRecipe(model="runs/demo/model"))  # doctest: +SKIP
    """
    tokenizer, _, stream_one = _load(recipe)
    sampling = Sampling.from_recipe(recipe)
    write("Chatting with {}. /reset clears the conversation, /exit ends it.\n".format(recipe.model))
    history = _system(recipe)
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            write("\n")
            return
        if line == "/exit":
            return
        if line == "/reset":
            history = _system(recipe)
            write("(conversation cleared)\n")
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        write("model> ")
        answer = ""
        for piece in stream_one(render_prompt(tokenizer, history), sampling):
            answer += piece
            write(piece)
        write("\n")
        history.append({"role": "assistant", "content": answer.strip()})


def _load(recipe: GenerateRecipe):
    """The model's tokenizer, and functions that complete / stream one rendered prompt, on the recipe's engine."""
    if recipe.engine == "llama.cpp":
        from seedbed.llamacpp import LlamaCppModel

        llama = LlamaCppModel(recipe.model, n_threads=recipe.threads)
        return llama.tokenizer, lambda text, sampling: llama.generate([text], sampling)[0], llama.stream
    from seedbed.models import load_model

    model, tokenizer = load_model(recipe.model)
    return (tokenizer, lambda text, sampling: generate(model, tokenizer, [text], sampling, batch_size=1)[0],
            lambda text, sampling: stream(model, tokenizer, text, sampling))


def _system(recipe: GenerateRecipe) -> list[dict[str, str]]:
    return [{"role": "system", "content": recipe.system}] if recipe.system else []


def stop_strings(tokenizer, sampling: Sampling) -> list[str]:
    """The strings generation stops at: the caller's plus the chat template's end-of-turn marker."""
    return list(dict.fromkeys(s for s in [*sampling.stop, *end_of_turn_strings(tokenizer)] if s))


def cut_at_stop(text: str, stops: list[str]) -> str:
    """`text` up to (not including) the earliest stop string in it.

    >>> cut_at_stop("five<|end|>more", ["<|end|>"])
    'five'
    """
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(found)] if found else text


def pending_stop_prefix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that is the start of a stop string (it may yet become one)."""
    return max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


def shown_length(text: str, stops: list[str], final: bool) -> int:
    """How much of a growing completion (already cut at its first stop string) can be shown now: all of it once
    decoding is over; otherwise not the end that may still become a stop string, nor a half-decoded character.

    >>> shown_length("five<|e", ["<|end|>"], final=False), shown_length("five\ufffd", [], final=False)
    (4, 4)
    """
    if final:
        return len(text)
    safe = len(text) - pending_stop_prefix(text, stops)
    return min(safe, len(text) - 1) if text.endswith("\ufffd") else safe


def _stop_token_ids(model, tokenizer, stops: list[str]) -> list[int]:
    """End-of-turn ids from the generation config, plus stop strings that are single tokens."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    vocab = tokenizer.get_vocab()
    return list(dict.fromkeys(ids + [vocab[s] for s in stops if s in vocab]))


def _generate_kwargs(model, tokenizer, sampling: Sampling, stops: list[str]) -> dict:
    kwargs: dict = dict(max_new_tokens=sampling.max_new_tokens, eos_token_id=_stop_token_ids(model, tokenizer, stops),
                        pad_token_id=tokenizer.pad_token_id)
    vocab = tokenizer.get_vocab()
    multi_token = [s for s in stops if s not in vocab]
    if multi_token:
        # Stop strings that span tokens end generation early too (the text is still cut afterwards).
        kwargs.update(stop_strings=multi_token, tokenizer=tokenizer)
    if sampling.is_greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    return kwargs


def _seed(sampling: Sampling) -> None:
    if sampling.seed is not None and not sampling.is_greedy:
        torch.manual_seed(sampling.seed)


@contextmanager
def _left_padding(tokenizer):
    # Decoder-only models continue from the last position, so batched prompts must be padded on the left.
    before = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = before
