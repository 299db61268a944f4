"""llama.cpp's sequences as serving slots: which sequence holds which tokens, and prompt prefixes they share.

One llama.cpp context holds up to `n_seq_max` sequences in one unified KV cache, as llama-server's `--parallel`
slots do (`kv_unified`, its default when it picks the slot count itself). A request decodes in a free slot (a
sequence id). When it starts, the slot whose cached tokens share the longest prefix with its prompt lends them:
`llama_memory_seq_cp` makes those KV cells the new sequence's too (in a unified cache the cells are shared, no data
is copied), and only the rest of the prompt is evaluated. A slot keeps its cells after its request ends, so the
next request with the same system prompt, few-shot examples or retrieved context skips them; a free slot's cells
are dropped, least recently used first, when the cache needs the room. Requests that arrive together share too:
one whose prompt begins with at least `SHARE_AT_LEAST` tokens that a running request is about to evaluate waits
until they are in the cache (a step or so) and then borrows them, rather than evaluating them again beside it.

Room is counted, not discovered: every running request reserves its prompt plus its most new tokens, and free
slots' cached tokens count until dropped, so the sum never exceeds the cache and `llama_decode` never runs out of
cells in the middle of a batch. A request that does not fit waits for a running one to end.

Written here because llama-cpp-python lacks it: its `Llama` holds one sequence, and its prefix caches
(`LlamaRAMCache`, `LlamaDiskCache`) save and restore a whole context state per prompt and serve one request at a
time. The low-level API has what llama-server's slots are built on (multi-sequence batches, `llama_memory_seq_cp`
and `seq_rm`), not the bookkeeping of which sequence holds which tokens, which is this module.

    >>> slots = KvSlots(context, n_slots=8, n_cells=8192)  # doctest: +SKIP
    >>> slot, reused = slots.place(prompt_ids, reserve=len(prompt_ids) + 64)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHARE_AT_LEAST = 64  # tokens of a prefix being evaluated worth waiting a step for (a template's header is not)


@dataclass
class Slot:
    """One llama.cpp sequence: the tokens whose KV cells it holds (positions 0..len-1) and whether a request
    decodes in it now (`reserved` cells, > 0 while in use)."""

    seq: int
    tokens: list[int] = field(default_factory=list)
    planned: list[int] = field(default_factory=list)  # the running request's prompt: what `tokens` will hold
    reserved: int = 0
    released: int = 0  # when its last request ended: free slots are reused and dropped oldest first

    @property
    def free(self) -> bool:
        return self.reserved == 0


class KvSlots:
    """The slots of one llama.cpp context (`llama_cpp._internals.LlamaContext`) and the room in its KV cache."""

    def __init__(self, context, n_slots: int, n_cells: int):
        self.context, self.cells = context, n_cells
        self.slots = [Slot(seq) for seq in range(n_slots)]
        self.clock = 0

    @property
    def reserved(self) -> int:
        return sum(s.reserved for s in self.slots)

    def cached(self) -> int:
        """Cells free slots hold for later requests (an upper bound: shared cells count once per slot)."""
        return sum(len(s.tokens) for s in self.slots if s.free)

    def place(self, prompt: list[int], reserve: int, force: bool = False) -> tuple[Slot, int] | None:
        """A free slot for `prompt`, holding the longest cached prefix of it that any slot has (at most all but its
        last token, whose logits the request needs), and how many tokens that is; None if no slot is free or the
        `reserve` cells do not fit beside the running requests' (unless `force`: nothing else runs)."""
        free = [s for s in self.slots if s.free]
        if not free or (not force and self.reserved + reserve > self.cells):
            return None
        source, common = None, 0
        for slot in self.slots:
            n = common_prefix(slot.tokens, prompt)
            if n > common or (n == common and n and slot.free and not source.free):
                source, common = slot, n
        common = min(common, len(prompt) - 1)
        coming = max((min(common_prefix(s.planned, prompt), len(prompt) - 1) for s in self.slots if not s.free),
                     default=0)
        if not force and coming - common >= SHARE_AT_LEAST:
            return None  # a running request is evaluating this prefix now: borrow it once it is in the cache
        if common > 0 and source.free:
            target = source
            self.context.kv_cache_seq_rm(target.seq, common, -1)
        else:
            target = min(free, key=lambda s: (len(s.tokens) > 0, s.released))  # an empty slot, else the oldest
            self.context.kv_cache_seq_rm(target.seq, 0, -1)
            if common > 0:
                self.context.kv_cache_seq_cp(source.seq, target.seq, 0, common)
        target.tokens, target.planned = list(prompt[:common]), list(prompt)
        target.reserved = max(1, reserve)
        for slot in sorted((s for s in self.slots if s.free and s.tokens), key=lambda s: s.released):
            if self.reserved + self.cached() <= self.cells:
                break
            self.drop(slot)
        return target, common

    def release(self, slot: Slot) -> None:
        """The slot's request ended; its cells stay cached for the next prompt that shares them."""
        self.clock += 1
        slot.reserved, slot.released, slot.planned = 0, self.clock, []

    def drop(self, slot: Slot) -> None:
        self.context.kv_cache_seq_rm(slot.seq, 0, -1)
        slot.tokens = []

    def clear(self) -> None:
        """Forget every cached token (scoring uses the whole cache)."""
        self.context.kv_cache_clear()
        for slot in self.slots:
            slot.tokens, slot.reserved, slot.planned = [], 0, []


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share.

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
