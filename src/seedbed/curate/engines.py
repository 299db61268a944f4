"""Where the per-record stages run: inline, in a pool of local processes, or on Ray Data.

Each engine takes an iterator of chunks (lists of records) and yields each chunk's result in input order, with
a bounded number of chunks in flight, so memory stays flat however large the input is. The stage code is the
same `ChunkWorker.process` everywhere; only the transport differs.
"""

from __future__ import annotations

import os
import pickle
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Iterable, Iterator

from seedbed.curate.stages import ChunkWorker
from seedbed.errors import RecipeError

_WORKER: ChunkWorker | None = None


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_inline(recipe, chunks: Iterable[list]) -> Iterator[dict[str, Any]]:
    worker = ChunkWorker(recipe)
    for chunk in chunks:
        yield worker.process(chunk)


def _init_process(recipe_json: str) -> None:
    global _WORKER
    from seedbed.recipe import DataRecipe

    _WORKER = ChunkWorker(DataRecipe.model_validate_json(recipe_json))


def _process_in_worker(chunk: list) -> dict[str, Any]:
    return _WORKER.process(chunk)


def run_local(recipe, chunks: Iterable[list], workers: int) -> Iterator[dict[str, Any]]:
    """A process pool; at most 2 chunks per worker in flight (Pool.imap would read the whole input ahead)."""
    if workers <= 1:
        yield from run_inline(recipe, chunks)
        return
    with ProcessPoolExecutor(workers, initializer=_init_process, initargs=(recipe.model_dump_json(),)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.submit(_process_in_worker, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _RayStage:
    """A Ray Data actor: builds the worker once, then processes one pickled chunk per call."""

    def __init__(self, recipe_json: str):
        from seedbed.recipe import DataRecipe

        self.worker = ChunkWorker(DataRecipe.model_validate_json(recipe_json))

    def __call__(self, batch: dict) -> dict:
        results = [pickle.dumps(self.worker.process(pickle.loads(blob))) for blob in batch["chunk"]]
        return {"index": batch["index"], "result": results}


def run_ray(recipe, chunks: Iterable[list], workers: int, address: str | None = None) -> Iterator[dict[str, Any]]:
    """The same stages on Ray Data: chunks go out in windows of 4 per worker, each window a Dataset mapped by a
    pool of actors (`concurrency=workers`); `address` points at an existing cluster ("auto" or ray://host:port),
    None starts a local one."""
    try:
        import ray
    except ImportError as error:
        raise RecipeError("--engine ray needs Ray Data: pip install 'seedbed[ray]'") from error
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        window: list[dict] = []
        for index, chunk in enumerate(chunks):
            window.append({"index": index, "chunk": pickle.dumps(chunk)})
            if len(window) >= 4 * workers:
                yield from _ray_window(ray, recipe, window, workers)
                window = []
        if window:
            yield from _ray_window(ray, recipe, window, workers)
    finally:
        if started_here:
            ray.shutdown()


def _ray_window(ray, recipe, window: list[dict], workers: int) -> Iterator[dict[str, Any]]:
    dataset = ray.data.from_items(window, override_num_blocks=len(window)).map_batches(
        _RayStage, fn_constructor_args=(recipe.model_dump_json(),), batch_size=1,
        concurrency=min(workers, len(window)), num_cpus=1)
    rows = sorted(dataset.take_all(), key=lambda row: row["index"])
    for row in rows:
        yield pickle.loads(row["result"])
