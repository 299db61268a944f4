"""The engine behind each served model: a bounded request queue and one worker thread in front of a backend.

Requests wait in a queue; the worker takes the first, waits up to `batch_window_ms` for more (up to `max_batch`,
and never more than the backend takes), and hands the batch to the backend, which streams each row's text as it
grows. While a batch decodes, requests that arrive join it at the next step (`admit`: continuous batching) and
rows that finish leave it at once. A queue already holding `max_queue` requests refuses more (`QueueFull`: the
API's 429 with Retry-After) rather than letting waits grow without bound. Composition, not inheritance: the
engine queues and relays, the backend (`seedbed.inference`) computes.

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


class QueueFull(Exception):
    """The engine's queue holds `max_queue` requests already; the client should retry after `retry_after` s."""

    def __init__(self, name: str, depth: int, retry_after: int):
        super().__init__(f"model '{name}' has {depth} requests waiting, its limit; retry in {retry_after} s")
        self.retry_after = retry_after


class Engine:
    """A named model: its backend, the queue of requests waiting for it, and the worker that batches them."""

    def __init__(self, name: str, backend: Backend, max_batch: int = 8, batch_window_ms: float = 10.0,
                 max_queue: int = 256):
        self.name, self.backend = name, backend
        self.max_batch = max(1, min(max_batch, backend.max_batch))
        self.batch_window = batch_window_ms / 1000
        self.max_queue = max_queue
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.running = 0  # requests being decoded now
        self.scores_waiting = 0  # score jobs waiting for the model: a running batch admits no one meanwhile
        self.finished_s: list[float] = []  # how long recent requests took, end to end (Retry-After's estimate)
        self.created = int(time.time())
        # The worker's decode and `score` (run in a request's thread) take turns on the model: a torch model's
        # forward passes and llama.cpp's one context are not safe to share between threads.
        self.model_lock = threading.Lock()
        self.count_lock = threading.Lock()
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
                    self.backend.decode(batch, admit=self.admit)
            except Exception as error:  # a failure of ours must reach the clients, not kill the worker
                for r in batch:
                    if r.finish_reason is None:
                        r.fail(error)
            finally:
                self.running = 0

    def admit(self, running: int) -> list[Request]:
        """The waiting requests that join a running batch of `running` rows now (none while a score job waits:
        it gets the model when the batch drains)."""
        self.running = running
        joining = []
        while running + len(joining) < self.max_batch and not self.scores_waiting:
            try:
                r = self.waiting.get_nowait()
            except queue.Empty:
                break
            if not r.cancelled:
                joining.append(r)
        self.running += len(joining)
        return joining

    def check_room(self) -> None:
        """Raise `QueueFull` if the queue holds `max_queue` requests already."""
        depth = self.waiting.qsize()
        if depth >= self.max_queue:
            recent = sorted(self.finished_s[-32:])
            typical = recent[len(recent) // 2] if recent else 1.0
            # the queue drains about max_batch requests per typical request time
            raise QueueFull(self.name, depth, max(1, round(typical * depth / self.max_batch)))

    # --- the event loop's side -----------------------------------------------------------------------------

    async def stream(self, request: Request):
        """Yield text pieces of `request` as they are decoded; afterwards request.finish_reason is set."""
        loop, out = asyncio.get_running_loop(), asyncio.Queue()

        def deliver(item) -> None:
            if not loop.is_closed():  # the client's loop may be gone by the time the worker finishes
                loop.call_soon_threadsafe(out.put_nowait, item)

        def end() -> None:
            self.finished_s = self.finished_s[-63:] + [time.monotonic() - request.started]
            deliver(None)

        self.check_room()
        request.on_piece, request.on_end, request.on_error = deliver, end, deliver
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

    async def complete(self, request: Request, on_piece=None) -> str:
        """The whole text of `request`; `on_piece(piece)` is called with each piece as it comes (a streamed reply
        made of several requests: calculator rounds, tool rounds)."""
        pieces = []
        async for piece in self.stream(request):
            pieces.append(piece)
            if on_piece is not None:
                on_piece(piece)
        return "".join(pieces)

    async def score(self, job: "ScoreJob") -> list[list[TokenScore]]:
        """`Backend.score` of the job's sequences, off the event loop and never while the worker decodes; a job
        cancelled while it waited for the model (its client left or ran out of time) is not run."""

        def run():
            with self.count_lock:
                self.scores_waiting += 1
            with self.model_lock:
                with self.count_lock:
                    self.scores_waiting -= 1
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
