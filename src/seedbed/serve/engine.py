"""The inference engine behind `seedbed serve`: dynamic micro-batching over a hand-rolled decode loop.

Requests wait in a queue; a worker thread takes the first, waits up to `batch_window_ms` for more (up to
`max_batch`), prefills them together (left-padded), then decodes one token for every live row per step, streaming
each row's text as it grows. Finished or cancelled rows leave the batch (their KV-cache rows are dropped), so a
long answer does not hold short ones back. We write the loop ourselves because `model.generate` cannot stream a
batch or stop one row early; the model forward, the KV cache and the sampling maths are transformers' and torch's.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from seedbed.generate import cut_at_stop, shown_length


@dataclass
class Request:
    """One generation: a rendered prompt, how to sample, and where the text goes."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stop_when: object = None  # optional callable(text) -> bool: stop early (the calculator's open annotations)
    # Filled in by the engine:
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    _loop: asyncio.AbstractEventLoop | None = None
    _out: asyncio.Queue | None = None

    def emit(self, item) -> None:
        self._loop.call_soon_threadsafe(self._out.put_nowait, item)


class QueuedEngine(ABC):
    """What every engine shares with the HTTP API: a request queue drained by one worker thread, and `stream` /
    `complete`, which hand a request to the worker and relay its text pieces back to the event loop."""

    def _start(self, name: str, path: str) -> None:
        self.name, self.path = name, path
        self.waiting: queue.Queue[Request] = queue.Queue()
        self.running = 0  # requests being decoded now
        self.created = int(time.time())
        threading.Thread(target=self._worker, daemon=True, name=f"engine-{name}").start()

    @property
    def queue_depth(self) -> int:
        return self.waiting.qsize()

    async def stream(self, request: Request):
        """Yield text pieces of `request` as they are decoded; afterwards request.finish_reason is set."""
        request._loop, request._out = asyncio.get_running_loop(), asyncio.Queue()
        self.waiting.put(request)
        try:
            while True:
                piece = await request._out.get()
                if piece is None:
                    return
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
        finally:
            request.cancelled = True  # a client that went away stops its decode at the next step

    async def complete(self, request: Request) -> str:
        return "".join([piece async for piece in self.stream(request)])

    @abstractmethod
    def _worker(self) -> None:
        """Take requests from `self.waiting` forever; emit each one's text pieces, then None (or an exception)."""


class Engine(QueuedEngine):
    """A loaded model and its batching worker.

    >>> engine = Engine("tiny", "path/to/model")  # doctest: +SKIP
    >>> async for piece in engine.stream(Request(tokenizer_ids, max_tokens=20)): print(piece, end="")  # doctest: +SKIP
    """

    def __init__(self, name: str, path: str, max_batch: int = 8, batch_window_ms: float = 10.0):
        from seedbed.models import load_model

        self.model, self.tokenizer = load_model(path)
        self.model.eval()
        self.max_batch = max_batch
        self.batch_window = batch_window_ms / 1000
        self.eos_ids = set(self.model.generation_config.eos_token_id or [])
        self.max_context = getattr(self.model.config, "max_position_embeddings", 2048)
        self._start(name, path)

    # --- the worker thread ---------------------------------------------------------------------------------

    def _worker(self) -> None:
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
                with torch.no_grad():
                    self._decode(batch)
            except Exception as error:  # a failure of ours must reach the clients, not kill the worker
                for r in batch:
                    if r.finish_reason is None:
                        r.emit(error)
            finally:
                self.running = 0

    def _decode(self, batch: list[Request]) -> None:
        device = self.model.device
        pad = self.tokenizer.pad_token_id
        longest = max(len(r.prompt_ids) for r in batch)
        ids = torch.tensor([[pad] * (longest - len(r.prompt_ids)) + r.prompt_ids for r in batch], device=device)
        mask = (torch.arange(longest, device=device)[None] >= torch.tensor(
            [longest - len(r.prompt_ids) for r in batch], device=device)[:, None]).long()  # (batch, seq); 0 = padding
        generators = [torch.Generator(device=device).manual_seed(r.seed) if r.seed is not None else None for r in batch]
        generated: list[list[int]] = [[] for _ in batch]
        shown = [0] * len(batch)
        live = list(range(len(batch)))  # indices into `batch` of rows still in the cache, in cache order
        cache = None
        step_ids, step_mask = ids, mask
        while live:
            positions = (step_mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]  # left padding shifts positions
            out = self.model(input_ids=step_ids, attention_mask=step_mask, position_ids=positions,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()  # (live, vocab)
            next_ids, keep = [], []
            for row, i in enumerate(live):
                r = batch[i]
                token = _sample(logits[row], r.temperature, r.top_p, generators[i])
                generated[i].append(token)
                r.completion_tokens += 1
                done = self._advance(r, generated[i], shown, i, token)
                if not done:
                    keep.append(row)
                    next_ids.append(token)
            if len(keep) < len(live):
                if not keep:
                    return
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                step_mask = step_mask[index]
                live = [live[row] for row in keep]
            step_ids = torch.tensor(next_ids, device=device)[:, None]
            step_mask = torch.cat([step_mask, torch.ones_like(step_ids)], dim=1)

    def _advance(self, r: Request, tokens: list[int], shown: list[int], i: int, token: int) -> bool:
        """Stream the new text of one row; return True (after finishing the request) if the row is done."""
        if r.cancelled:
            r.finish_reason = "cancelled"
            r.emit(None)
            return True
        at_eos = token in self.eos_ids
        text = self.tokenizer.decode(tokens[:-1] if at_eos else tokens, skip_special_tokens=True)
        cut = cut_at_stop(text, r.stop)
        stopped = at_eos or len(cut) < len(text) or bool(r.stop_when and r.stop_when(cut))
        at_limit = r.completion_tokens >= r.max_tokens or len(r.prompt_ids) + len(tokens) >= self.max_context
        safe = shown_length(cut, r.stop, final=stopped or at_limit)
        if safe > shown[i]:
            r.emit(cut[shown[i]:safe])
            shown[i] = safe
        r.text = cut[:shown[i]]
        if stopped or at_limit:
            r.finish_reason = "stop" if stopped else "length"
            r.emit(None)
            return True
        return False


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator) -> int:
    """Greedy at temperature 0; otherwise temperature scaling and nucleus (top-p) sampling."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # tokens after the nucleus is full
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
