"""The engine behind each served model: a request queue and one worker thread in front of an inference backend.

Requests wait in a queue; the worker takes the first, waits up to `batch_window_ms` for more (up to `max_batch`,
and never more than the backend takes: llama.cpp decodes one at a time), and hands the batch to the backend,
which streams each row's text as it grows. Composition, not inheritance: the engine queues and relays, the
backend (`seedbed.inference`) computes.

    >>> engine = Engine("tiny", load("path/to/model"), max_batch=8)  # doctest: +SKIP
    >>> async for piece in engine.stream(Request(prompt_ids, max_tokens=20)): print(piece, end="")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time

from seedbed.inference import Backend, TokenScore
from seedbed.inference.request import Request


class Engine:
    """A named model: its backend, the queue of requests waiting for it, and the worker that batches them."""

    def __init__(self, name: str, backend: Backend, max_batch: int = 8, batch_window_ms: float = 10.0):
        self.name, self.backend = name, backend
        self.max_batch = max(1, min(max_batch, backend.max_batch))
        self.batch_window = batch_window_ms / 1000
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.running = 0  # requests being decoded now
        self.created = int(time.time())
        # The worker's decode and `score` (run in a request's thread) take turns on the model: a torch model's
        # forward passes and llama.cpp's one context are not safe to share between threads.
        self.model_lock = threading.Lock()
        threading.Thread(target=self.work, daemon=True, name=f"engine-{name}").start()

    @property
    def tokenizer(self):
        return self.backend.tokenizer

    @property
    def max_context(self) -> int:
        return self.backend.max_context

    @property
    def queue_depth(self) -> int:
        return self.waiting.qsize()

    # --- the worker thread ---------------------------------------------------------------------------------

    def work(self) -> None:
        """Take batches from the queue forever and decode them."""
        while True:
            batch = [self.waiting.get()]
            deadline = time.monotonic() + self.batch_window
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.waiting.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            batch = [r for r in batch if not r.cancelled]
            if not batch:
                continue
            self.running = len(batch)
            try:
                with self.model_lock:
                    self.backend.decode(batch)
            except Exception as error:  # a failure of ours must reach the clients, not kill the worker
                for r in batch:
                    if r.finish_reason is None:
                        r.fail(error)
            finally:
                self.running = 0

    # --- the event loop's side -----------------------------------------------------------------------------

    async def stream(self, request: Request):
        """Yield text pieces of `request` as they are decoded; afterwards request.finish_reason is set."""
        loop, out = asyncio.get_running_loop(), asyncio.Queue()

        def deliver(item) -> None:
            if not loop.is_closed():  # the client's loop may be gone by the time the worker finishes
                loop.call_soon_threadsafe(out.put_nowait, item)

        request.on_piece, request.on_end, request.on_error = deliver, lambda: deliver(None), deliver
        self.waiting.put(request)
        try:
            while True:
                piece = await out.get()
                if piece is None:
                    return
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            request.cancelled = True  # a client that went away stops its decode at the next step

    async def complete(self, request: Request) -> str:
        return "".join([piece async for piece in self.stream(request)])

    async def score(self, job: "ScoreJob") -> list[list[TokenScore]]:
        """`Backend.score` of the job's sequences, off the event loop and never while the worker decodes; a job
        cancelled while it waited for the model (its client left or ran out of time) is not run."""

        def run():
            with self.model_lock:
                if job.cancelled:
                    return []
                return self.backend.score(job.sequences, job.starts, job.top_k)

        return await asyncio.to_thread(run)


class ScoreJob:
    """Sequences to score (`Backend.score`'s arguments) and whether their client still wants them."""

    def __init__(self, sequences: list[list[int]], starts: list[int], top_k: int):
        self.sequences, self.starts, self.top_k = sequences, starts, top_k
        self.cancelled = False
        self.started = time.monotonic()
