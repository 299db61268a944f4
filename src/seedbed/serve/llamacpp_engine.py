"""The llama.cpp engine behind `seedbed serve --engine llama.cpp`: GGUF models through llama-cpp-python.

    seedbed serve --engine llama.cpp --model q4=runs/q4 --api-key sk-local

It has the torch `Engine`'s interface (name, path, tokenizer, stream, complete, queue_depth, running, created,
max_context), so the HTTP API serves either unchanged. Requests wait in a queue and a worker thread runs them
one at a time: llama-cpp-python's high-level API decodes one sequence per context, so there is no batching
here; llama.cpp's own speed on quantized weights is what this engine offers.
"""

from __future__ import annotations


from seedbed.llamacpp import LlamaCppModel, Outcome
from seedbed.serve.engine import QueuedEngine, Request


class LlamaCppEngine(QueuedEngine):
    """A GGUF model in llama.cpp and the worker thread that runs its requests in arrival order.

    >>> engine = LlamaCppEngine("q4", "runs/q4/model.gguf")  # doctest: +SKIP
    >>> async for piece in engine.stream(Request(prompt_ids, max_tokens=20)): print(piece, end="")  # doctest: +SKIP
    """

    def __init__(self, name: str, path: str, n_threads: int | None = None):
        self.model = LlamaCppModel(path, n_threads=n_threads)
        self.tokenizer = self.model.tokenizer
        self.max_context = self.model.max_context
        self._start(name, path)

    def _worker(self) -> None:
        while True:
            request = self.waiting.get()
            if request.cancelled:
                continue
            self.running = 1
            try:
                self._run(request)
            except Exception as error:  # a failure of ours must reach the client, not kill the worker
                if request.finish_reason is None and not request._loop.is_closed():
                    request.emit(error)
            finally:
                self.running = 0

    def _run(self, r: Request) -> None:
        outcome = Outcome()
        for piece in self.model.pieces(r.prompt_ids, r.max_tokens, r.temperature, r.top_p, r.seed, r.stop,
                                       stop_when=r.stop_when, cancelled=lambda: r.cancelled, outcome=outcome):
            r.text += piece
            r.completion_tokens = outcome.completion_tokens
            r.emit(piece)
        r.completion_tokens = outcome.completion_tokens
        r.finish_reason = outcome.finish_reason or "stop"
        r.emit(None)
