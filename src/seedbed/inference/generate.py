"""Text generation on any backend: batched completions, token-by-token streaming, one answer, a terminal chat.

    seedbed generate --model runs/demo/model "What is 12 plus 30?"
    seedbed chat --model runs/demo/model --system "Answer briefly."
    seedbed generate --engine llama.cpp --model runs/q4 "What is 12 plus 30?"

Prompts given to `generate` and `stream` are already rendered (chat template applied, BOS included), so they
are tokenized without adding special tokens again. Both stop at the model's end-of-turn tokens and at stop
strings: the sampling's `stop` plus the template's end-of-turn marker.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import Callable, Iterator

from seedbed.chat import render_prompt
from seedbed.inference import Backend, load
from seedbed.inference.annotations import AnnotatedAnswer
from seedbed.inference.request import Request
from seedbed.inference.stops import Sampling


def generate(backend: Backend, prompts: list[str], sampling: Sampling, batch_size: int = 8,
             progress: Callable[[int], None] | None = None) -> list[str]:
    """Complete rendered prompts, `batch_size` at a time; each text is cut before its first stop string.

    >>> backend = load("runs/demo/model")  # doctest: +SKIP
    >>> generate(backend, [render_prompt(backend.tokenizer, [{"role": "user", "content": "Hi"}])], Sampling(greedy=True))  # doctest: +SKIP
    ['Hello! How can I help you today?']
    """
    return [r.text for r in generate_requests(backend, prompts, sampling, batch_size, progress)]


def generate_requests(backend: Backend, prompts: list[str], sampling: Sampling, batch_size: int = 8,
                      progress: Callable[[int], None] | None = None) -> list[Request]:
    """`generate`, returning the finished requests: each with its `text`, `finish_reason` ("stop": an end of
    turn or a stop string; "length": max_new_tokens or the context ran out) and `completion_tokens`.

    >>> [(r.finish_reason, r.completion_tokens) for r in generate_requests(backend, prompts, Sampling(greedy=True))]  # doctest: +SKIP
    [('stop', 9), ('length', 256)]
    """
    requests = [request_for(backend, p, sampling) for p in prompts]
    decode_in_batches(backend, requests, batch_size, progress)
    return requests


def decode_in_batches(backend: Backend, requests: list[Request], batch_size: int = 8,
                      progress: Callable[[int], None] | None = None) -> None:
    """Decode `requests` to their end, `batch_size` (at most the backend's `max_batch`) at a time."""
    step = max(1, min(batch_size, backend.max_batch))
    for start in range(0, len(requests), step):
        backend.decode(requests[start : start + step])
        if progress:
            progress(min(start + step, len(requests)))


def generate_with_calculator(backend: Backend, prompts: list[str], sampling: Sampling, batch_size: int = 8,
                             progress: Callable[[int], None] | None = None) -> list[AnnotatedAnswer]:
    """`generate_requests` with GSM8K calculator annotations completed exactly, by the loop `seedbed serve` runs
    (`annotations.AnnotatedAnswer`): in each round every unfinished answer decodes, batched, up to its next
    `<<EXPR=`, which gets its value; rounds go on until every answer is done. Each answer has its `text`, `calls`,
    `finish_reason` and `completion_tokens`.

    >>> [a.calls for a in generate_with_calculator(backend, prompts, Sampling(greedy=True))]  # doctest: +SKIP
    [[CalculatorCall(expression='48/2', value='24')], []]
    """
    tokenizer = backend.tokenizer
    answers = [AnnotatedAnswer(tokenizer(p, add_special_tokens=False)["input_ids"], tokenizer) for p in prompts]
    while unfinished := [a for a in answers if not a.done]:
        requests = []
        for answer in unfinished:
            request = Request.from_sampling(answer.next_ids(), sampling, tokenizer)
            request.stop_when, request.max_tokens = answer.stop_when(), answer.budget(sampling.max_new_tokens)
            requests.append(request)
        decode_in_batches(backend, requests, batch_size)
        for answer, request in zip(unfinished, requests):
            answer.take(request.text, request.finish_reason, request.completion_tokens)
        if progress:
            progress(sum(a.done for a in answers))
    return answers


def stream(backend: Backend, prompt: str, sampling: Sampling) -> Iterator[str]:
    """Yield the completion of one rendered prompt piece by piece; joined, the pieces equal `generate`'s text.

    >>> for piece in stream(backend, prompt, Sampling(greedy=True)):  # doctest: +SKIP
    ...     print(piece, end="", flush=True)
    """
    pieces: queue.Queue = queue.Queue()
    request = request_for(backend, prompt, sampling)
    request.on_piece, request.on_end = pieces.put, lambda: pieces.put(None)
    failure: list[BaseException] = []

    def run():
        try:
            backend.decode([request])
        except BaseException as e:  # re-raised in the caller's thread
            failure.append(e)
            pieces.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while (piece := pieces.get()) is not None:
            yield piece
    finally:
        request.cancelled = True  # a consumer that stops early stops the decode at its next step
        thread.join()
    if failure:
        raise failure[0]


def request_for(backend: Backend, prompt: str, sampling: Sampling) -> Request:
    """A decode request for one rendered prompt."""
    ids = backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return Request.from_sampling(ids, sampling, backend.tokenizer)


def run_generate(recipe, prompt: str, write: Callable[[str], None] | None = None) -> str:
    """Load `recipe.model` and answer one prompt (as a chat turn unless `recipe.raw`); stream to `write` if given.

    >>> run_generate(GenerateRecipe(model="runs/demo/model", greedy=True), "What is 2 plus 3?")  # doctest: +SKIP
    '2 plus 3 is 5.\\n#### 5'
    """
    backend = load(recipe.model, recipe.engine, recipe.threads)
    tokenizer = backend.tokenizer
    if recipe.raw:
        # Plain continuation: the text gets the BOS a template would have written.
        bos = tokenizer.bos_token or ""
        text = prompt if prompt.startswith(bos) else bos + prompt
    else:
        text = render_prompt(tokenizer, system_turn(recipe) + [{"role": "user", "content": prompt}])
    sampling = Sampling.from_recipe(recipe)
    if write is None:
        return generate(backend, [text], sampling, batch_size=1)[0]
    answer = ""
    for piece in stream(backend, text, sampling):
        answer += piece
        write(piece)
    return answer


def print_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_chat(recipe, read: Callable[[str], str] = input, write: Callable[[str], None] = print_now) -> None:
    """Chat in the terminal: answers stream token by token and the conversation is remembered.

    `/reset` forgets the conversation; `/exit` or end of input (Ctrl-D) ends the chat.

    >>> run_chat(GenerateRecipe(model="runs/demo/model"))  # doctest: +SKIP
    """
    backend = load(recipe.model, recipe.engine, recipe.threads)
    sampling = Sampling.from_recipe(recipe)
    write("Chatting with {}. /reset clears the conversation, /exit ends it.\n".format(recipe.model))
    history = system_turn(recipe)
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            write("\n")
            return
        if line == "/exit":
            return
        if line == "/reset":
            history = system_turn(recipe)
            write("(conversation cleared)\n")
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        write("model> ")
        answer = ""
        for piece in stream(backend, render_prompt(backend.tokenizer, history), sampling):
            answer += piece
            write(piece)
        write("\n")
        history.append({"role": "assistant", "content": answer.strip()})


def system_turn(recipe) -> list[dict[str, str]]:
    return [{"role": "system", "content": recipe.system}] if recipe.system else []
