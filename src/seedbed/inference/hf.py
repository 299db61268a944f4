"""The torch backend: a transformers model decoded by our own batched loop, and held-out loss.

Rows are prefilled together (left-padded), then each step decodes one token for every live row; a row that
finishes or is cancelled leaves the batch at once (its KV-cache row is dropped), so a long answer does not hold
short ones back. We write the loop ourselves because `model.generate` cannot stream a batch or end one row early;
the forward pass, KV cache and sampling maths are transformers' and torch's. `generate`, `eval` and `serve` all
decode here, so one seed gives one answer everywhere.

A request with a JSON schema is decoded under llguidance's constraint: before sampling, its row's logits are
masked to the tokens the schema allows next; the sampled token advances the row's matcher; the row ends ("stop")
when the JSON is complete. Rows with and without a schema share a batch. The schema is compiled once per backend
(`compile_schema`, cached) and each request gets a copy of the compiled matcher.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from seedbed.chat import Example, end_of_turn_token_ids, tokenize_example
from seedbed.inference.request import Request
from seedbed.inference.scores import MAX_TOP, TokenScore
from seedbed.inference.stops import CompiledSchemas, SchemaError, TextTracker

IGNORE = -100  # label for tokens that are not scored, as in transformers' loss functions
SCORED_PER_FORWARD = 512  # logits rows per forward when scoring: bounds memory (Gemma: 512 x 262,144 floats, 0.5 GB)
MIN_SHARED_PREFIX = 16  # tokens all contexts of a `score` call must share for them to run once (not worth it below)
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}  # as json.dumps


class TorchBackend:
    """A loaded causal LM and its tokenizer.

    >>> backend = TorchBackend(*load_model("runs/demo/model"))  # doctest: +SKIP
    >>> backend.decode([Request(prompt_ids, max_tokens=20, temperature=0)])  # doctest: +SKIP
    """

    max_batch = 2**31  # no limit of its own: callers choose (eval's --batch-size, serve's --max-batch)

    def __init__(self, model, tokenizer, name: str = ""):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.model.eval()
        eos = model.generation_config.eos_token_id
        self.eos_ids = set([] if eos is None else [eos] if isinstance(eos, int) else eos)
        self.max_context = getattr(model.config, "max_position_embeddings", 2048)
        # llguidance's masks cover every token of the logits (the model's vocabulary) and of the tokenizer
        self.mask_width = max(model.config.get_text_config().vocab_size, len(tokenizer))
        self.guidance_tokenizer = None  # llguidance's view of the tokenizer, built with the first schema
        self.schemas = CompiledSchemas()  # each a pristine llguidance matcher; requests get copies

    @classmethod
    def load(cls, name: str) -> "TorchBackend":
        from seedbed.models import load_model

        return cls(*load_model(name), name=name)

    # --- decoding -----------------------------------------------------------------------------------------

    def decode(self, batch: list[Request], admit: Admit | None = None) -> None:
        """Decode every request in `batch` to its end: emit its text as it becomes safe, then end it. With
        `admit`, requests that arrive meanwhile join the running batch at the next step (continuous batching)."""
        self.steps = getattr(self, "steps", 0)
        with torch.no_grad():
            self._decode(batch, admit)

    def _decode(self, batch: list[Request], admit: Admit | None) -> None:
        running = RunningBatch(self.model.device)
        joining = list(batch)
        while True:
            if running.rows:
                self.step(running)
            if admit is not None:
                joining += admit(len(running.rows))
            if joining:
                running.join(*self.prefill(joining))
                joining = []
            if not running.rows:
                return

    def prefill(self, batch: list[Request]) -> tuple[list["Row"], object, torch.Tensor]:
        """Run the prompts of `batch` (left-padded) and sample each one's first token; return the rows still
        going, their KV cache and attention mask, for `RunningBatch.join`."""
        device = self.model.device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        longest = max(len(r.prompt_ids) for r in batch)
        ids = torch.tensor([[pad] * (longest - len(r.prompt_ids)) + r.prompt_ids for r in batch], device=device)
        mask = (torch.arange(longest, device=device)[None] >= torch.tensor(
            [longest - len(r.prompt_ids) for r in batch], device=device)[:, None]).long()  # (batch, seq); 0 = padding
        rows = []
        for r in batch:
            tracker = TextTracker(self.tokenizer, self.eos_ids, r.stop, r.stop_when)
            constraint = None if r.json_schema is None else JsonConstraint(self.compile_schema(r.json_schema),
                                                                           tracker.end_ids, self.mask_width)
            generator = torch.Generator(device=device).manual_seed(r.seed) if r.seed is not None else None
            rows.append(Row(r, tracker, constraint, generator))
        cache, keep = self.forward_and_sample(rows, ids, mask, None)
        if 0 < len(keep) < len(rows):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask = mask[index]
        return [rows[k] for k in keep], cache, mask

    def step(self, running: "RunningBatch") -> None:
        """One token for every running row; rows that finish leave the batch at once."""
        ids = torch.tensor([row.next_id for row in running.rows], device=running.device)[:, None]
        running.mask = torch.cat([running.mask, torch.ones_like(ids)], dim=1)
        running.cache, keep = self.forward_and_sample(running.rows, ids, running.mask, running.cache)
        running.keep(keep)

    def forward_and_sample(self, rows: list["Row"], ids: torch.Tensor, mask: torch.Tensor, cache):
        """Run `ids` (rows, new) after `cache`, sample each row's next token; return the cache and the indices of
        the rows that go on (each with its `next_id`)."""
        self.steps += 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]  # left padding shifts positions
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()  # (rows, vocab)
        for k, row in enumerate(rows):
            adjust_logits(logits[k], row.request)
        constrained = [k for k, row in enumerate(rows) if row.constraint is not None]
        if constrained:
            mask_logits(logits, constrained, [rows[k].constraint for k in constrained])
        keep = []
        for k, row in enumerate(rows):
            try:
                token = sample(logits[k], row.request.temperature, row.request.top_p, row.generator)
                done = self.advance(row.request, row.tracker, token, row.constraint)
            except Exception as error:  # this row's own failure (its settings, its stop_when): not its batch's
                row.request.fail(error)
                continue
            if not done:
                row.next_id = token
                keep.append(k)
        return out.past_key_values, keep

    def advance(self, r: Request, tracker: TextTracker, token: int, constraint: "JsonConstraint | None" = None) -> bool:
        """Give one row its new token; return True (after ending the request) if the row is done."""
        if r.cancelled:
            r.end("cancelled")
            return True
        complete = constraint is not None and constraint.accept(token)
        return r.take(token, tracker, min(r.max_tokens, self.max_context - len(r.prompt_ids)), complete)

    def compile_schema(self, schema: dict):
        """llguidance's matcher for `schema`, compiled once per schema (cached); a `SchemaError` if it cannot be.

        The first call builds llguidance's view of the tokenizer (seconds for Gemma's 262k tokens; once). JSON is
        written as Python's `json.dumps` writes it (", " between items, ": " after keys, no other whitespace) unless
        the schema's `x-guidance` asks otherwise: that is how most JSON a model was tuned on looks (a SNIPS model
        forced into compact JSON lost 6 points of exact match, BENCHMARKS.md), and a model cannot pad its answer
        with endless whitespace.
        """
        return self.schemas.get(schema, self.compile_matcher)

    def compile_matcher(self, schema: dict):
        from llguidance import LLMatcher

        grammar = LLMatcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT)
        matcher = LLMatcher(self.guidance_view(), grammar, log_level=0)
        if matcher.is_error():
            raise SchemaError(f"the JSON schema cannot constrain this model's tokens: {matcher.get_error()}")
        return matcher

    def guidance_view(self):
        """llguidance's tokenizer for this model: token bytes from the Hugging Face tokenizer, the end ids as EOS."""
        if self.guidance_tokenizer is None:
            import llguidance.hf

            ends = sorted(self.eos_ids | set(end_of_turn_token_ids(self.tokenizer)))
            try:
                self.guidance_tokenizer = llguidance.hf.from_tokenizer(
                    self.tokenizer, n_vocab=self.mask_width, eos_token=ends)
            except ValueError as e:  # a slow (Python-only) tokenizer
                raise SchemaError(f"{self.name or 'this model'}: JSON schemas need a fast tokenizer: {e}") from None
        return self.guidance_tokenizer

    # --- scoring ------------------------------------------------------------------------------------------

    def heldout_loss(self, examples: list[Example], max_length: int = 1024, batch_size: int = 8) -> dict:
        return heldout_loss(self.model, self.tokenizer, examples, max_length, batch_size)

    def score(self, sequences: list[list[int]], starts: list[int], top_k: int = 0) -> list[list[TokenScore]]:
        return score_tokens(self.model, sequences, starts, top_k)


Admit = Callable[[int], list[Request]]  # given the rows running now, the requests that join at the next step


@dataclass
class Row:
    """One request in a running batch: its stop tracker, JSON constraint, seeded generator and next input token."""

    request: Request
    tracker: TextTracker
    constraint: "JsonConstraint | None"
    generator: torch.Generator | None
    next_id: int = -1  # sampled, not yet in the KV cache


class RunningBatch:
    """The rows being decoded, their KV cache and attention mask (rows, seq; 0 = padding), all left-padded to one
    length. Rows join with their own prefilled cache (`join`) and leave the moment they end (`keep`).

    Joining pads the shorter side on the left, in the cache and the mask; the mask hides the padding, and a row's
    positions come from its mask, so its numbers are those of decoding it alone. Leaving drops the columns that
    every remaining row has as padding, so a long finished prompt stops costing attention. Sliding-window layers
    (Gemma 3) keep only their last window - 1 positions and one position count for all rows; they are fitted the
    same way. We do this surgery ourselves because transformers' continuous-batching manager needs its paged
    attention kernels and a generation thread of its own, which our per-row stops, JSON constraints and seeded
    sampling would have to be rebuilt around (BENCHMARKS.md: "Serving").
    """

    def __init__(self, device):
        self.device = device
        self.rows: list[Row] = []
        self.cache = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=device)

    def join(self, rows: list[Row], cache, mask: torch.Tensor) -> None:
        if not rows:
            return
        if not self.rows:
            self.rows, self.cache, self.mask = list(rows), cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for ours, theirs in zip(self.cache.layers, cache.layers):
            if not ours.is_initialized or not theirs.is_initialized:
                continue
            kept = min(width, ours.sliding_window - 1) if ours.is_sliding else width
            ours.keys = torch.cat([fit_left(ours.keys, kept, -2), fit_left(theirs.keys, kept, -2)])
            ours.values = torch.cat([fit_left(ours.values, kept, -2), fit_left(theirs.values, kept, -2)])
            if ours.is_sliding:
                ours.cumulative_length = width
        self.mask = torch.cat([fit_left(self.mask, width, -1), fit_left(mask, width, -1)])
        self.rows += rows

    def keep(self, indices: list[int]) -> None:
        if len(indices) == len(self.rows):
            return
        self.rows = [self.rows[k] for k in indices]
        if not self.rows:
            self.cache, self.mask = None, self.mask[:0]
            return
        index = torch.tensor(indices, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        padding = int((self.mask.cumsum(-1) == 0).sum(-1).min())  # columns that are padding in every row
        if padding:
            width = self.mask.shape[1] - padding
            for layer in self.cache.layers:
                if not layer.is_initialized:
                    continue
                kept = min(width, layer.sliding_window - 1) if layer.is_sliding else width
                layer.keys, layer.values = fit_left(layer.keys, kept, -2), fit_left(layer.values, kept, -2)
                if layer.is_sliding:
                    layer.cumulative_length = width
            self.mask = self.mask[:, padding:]


def fit_left(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """`t` with exactly `length` entries along `dim`: zeros added on the left, or its leftmost entries dropped."""
    have = t.shape[dim]
    if have >= length:
        return t.narrow(dim, have - length, length)
    shape = list(t.shape)
    shape[dim] = length - have
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def adjust_logits(logits: torch.Tensor, r: Request) -> None:
    """Add the request's `logit_bias` and subtract its presence and frequency penalties (OpenAI's definitions:
    over the tokens generated so far) in place, on one row's logits (vocab,)."""
    ids, deltas = r.logit_adjustments()
    if ids:
        logits[ids] += torch.tensor(deltas, dtype=logits.dtype, device=logits.device)


class JsonConstraint:
    """One row's JSON-schema constraint: a copy of the compiled llguidance matcher, advanced token by token."""

    def __init__(self, compiled, end_ids: set[int], width: int):
        self.matcher, self.width = compiled.deep_copy(), width  # width: the tokens llguidance's masks cover
        self.end_ids = frozenset(end_ids)  # the row's end-of-turn ids: allowed once the JSON is complete

    def accept(self, token: int) -> bool:
        """Advance past the sampled `token`; True when the JSON is complete and nothing but the end may follow."""
        if token in self.end_ids:
            return True  # only allowed once the JSON is complete; the row's tracker ends it
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"llguidance refused token {token} its own mask allowed: {self.matcher.get_error()}")
        return self.matcher.is_stopped()


def mask_logits(logits: torch.Tensor, rows: list[int], constraints: list[JsonConstraint]) -> None:
    """In each row of `logits` (live, vocab) named in `rows`, set every token its constraint forbids to -inf."""
    import numpy as np

    vocab = logits.shape[-1]
    words = np.empty((len(rows), (constraints[0].width + 31) // 32), dtype=np.uint32)  # bit j of word w: token 32w+j
    for k, (row, constraint) in enumerate(zip(rows, constraints)):
        constraint.matcher.unsafe_compute_mask_ptr(words[k].ctypes.data, words.shape[1] * 4)
        forbidden = np.unpackbits(words[k].view(np.uint8), bitorder="little")[:vocab] == 0
        if constraint.matcher.is_accepting():  # the JSON may end here: so may the row
            forbidden[[t for t in constraint.end_ids if t < vocab]] = False
        logits[row].masked_fill_(torch.from_numpy(forbidden).to(logits.device), float("-inf"))


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator) -> int:
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


def heldout_loss(model, tokenizer, examples: list[Example], max_length: int = 1024, batch_size: int = 8) -> dict:
    """Token-weighted mean cross-entropy over the assistant tokens of `examples`, and its perplexity.

    Only the tokens a fine-tuned model is trained to produce are scored (the assistant turns, end-of-turn marker
    included, via `chat.tokenize_example`), so base and tuned models are compared on the same tokens. Raw-text
    examples are scored on all their tokens. With no scored token, loss and perplexity are NaN.

    >>> heldout_loss(model, tokenizer, examples)  # doctest: +SKIP
    {'loss': 1.83, 'perplexity': 6.23, 'tokens': 5120}
    """
    rows = [tokenize_example(tokenizer, ex, max_length) for ex in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            width = max(len(r["input_ids"]) for r in batch)
            # Right padding: real tokens keep positions 0..n-1, exactly as in training.
            ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in batch])
            attention = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in batch])
            labels = torch.tensor([[t if m else IGNORE for t, m in zip(r["input_ids"], r["assistant_masks"])]
                                   + [IGNORE] * (width - len(r["input_ids"])) for r in batch])
            # Position t predicts token t+1. Logits only where some row scores (answers): the output layer is most
            # of a small model's cost (Gemma 3 270M: 640 x 262,144), and prompt positions carry no loss.
            targets = labels[:, 1:].to(model.device)
            keep = (targets != IGNORE).any(dim=0).nonzero().flatten()
            logits = model(input_ids=ids.to(model.device), attention_mask=attention.to(model.device),
                           logits_to_keep=keep).logits  # (batch, kept, vocab)
            targets = targets[:, keep]
            scored = targets != IGNORE  # indexing copies only the scored rows of the logits
            total += F.cross_entropy(logits[scored].float(), targets[scored], reduction="sum").item()
            tokens += int(scored.sum())
    model.train(was_training)
    loss = total / tokens if tokens else math.nan
    return {"loss": loss, "perplexity": math.exp(loss) if tokens else math.nan, "tokens": tokens}


def score_tokens(model, sequences: list[list[int]], starts: list[int], top_k: int = 0) -> list[list[TokenScore]]:
    """log p(token | tokens before it) for each token of each sequence from its start on (`Backend.score`).

    Sequences that share their context (the same tokens before their start: a multiple-choice question's
    choices) run that context once and their own tokens on copies of its KV cache (`score_shared_context`).
    Other sequences of similar length run together, right-padded (real tokens keep positions 0..n-1, as when
    one runs alone), with logits only at the positions that predict a scored token; a sequence with more scored
    tokens than `SCORED_PER_FORWARD` runs alone, its positions in slices.

    >>> score_tokens(model, [[2, 15, 27, 9]], starts=[2], top_k=1)  # doctest: +SKIP
    [[TokenScore(token=27, logprob=-3.1, top=[(27, -3.1)]), TokenScore(token=9, logprob=-0.4, top=[(9, -0.4)])]]
    """
    if not 0 <= top_k <= MAX_TOP:
        raise ValueError(f"top_k must be between 0 and {MAX_TOP}")
    for ids, start in zip(sequences, starts, strict=True):
        if not 1 <= start <= len(ids):
            raise ValueError(f"start {start} is outside 1..{len(ids)} (the first token has no context to score it in)")
    results: list[list[TokenScore]] = [[] for _ in sequences]
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, (ids, start) in enumerate(zip(sequences, starts)):
        by_context.setdefault(tuple(ids[:start]), []).append(i)
    shared = [members for members in by_context.values() if len(members) > 1]
    alone = sorted((m[0] for m in by_context.values() if len(m) == 1), key=lambda i: len(sequences[i]))  # less padding
    groups, group, scored = [], [], 0
    for i in alone:
        n = len(sequences[i]) - starts[i]
        if group and scored + n > SCORED_PER_FORWARD:
            groups.append(group)
            group, scored = [], 0
        group.append(i)
        scored += n
    groups += [group] if group else []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        prefix = shared_prefix(model, [sequences[m[0]][: starts[m[0]]] for m in shared]) if len(shared) > 1 else None
        for members in shared:
            score_shared_context(model, sequences, starts, members, top_k, results, prefix)
        for group in groups:
            wanted = sorted({t - 1 for i in group for t in range(starts[i], len(sequences[i]))})
            for first in range(0, len(wanted), SCORED_PER_FORWARD):
                _score_slice(model, sequences, starts, group, wanted[first : first + SCORED_PER_FORWARD], top_k, results)
    model.train(was_training)
    return results


def shared_prefix(model, contexts: list[list[int]]) -> tuple[int, object] | None:
    """The tokens every context starts with (a few-shot preamble), run once: (their count, their KV cache), or
    None when they share fewer than `MIN_SHARED_PREFIX`. Each context keeps at least its last token to run."""
    n = min(len(c) for c in contexts) - 1
    for context in contexts[1:]:
        n = next((k for k in range(n) if context[k] != contexts[0][k]), n)
    if n < MIN_SHARED_PREFIX:
        return None
    return n, model(input_ids=torch.tensor([contexts[0][:n]], device=model.device), use_cache=True,
                    logits_to_keep=1).past_key_values


def score_shared_context(model, sequences, starts, members: list[int], top_k: int, results, prefix=None) -> None:
    """Score sequences `members`, which share their context (`sequences[i][:starts[i]]`), into `results`: the
    context runs once per batch of members (after `prefix`, `shared_prefix`'s, when given), its last position
    predicting each one's first scored token; the members' own tokens then run together, right-padded, on
    copies of the context's KV cache. The same numbers as scoring each alone, for a multiple-choice question's
    context paid once rather than once per choice."""
    context = sequences[members[0]][: starts[members[0]]]
    width = max(len(sequences[i]) - len(context) for i in members)  # scored tokens of the longest member
    per_batch = max(1, SCORED_PER_FORWARD // max(width, 1))  # bounds the logits: (batch, width, vocab)
    for first in range(0, len(members), per_batch):
        batch = members[first : first + per_batch]
        done, cache = (0, None) if prefix is None else (prefix[0], copy.deepcopy(prefix[1]))
        out = model(input_ids=torch.tensor([context[done:]], device=model.device), past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        head = F.log_softmax(out.logits[0, -1].float(), -1)  # (vocab,): predicts every member's first token
        rows = [[head] for _ in batch]
        if width > 1:  # every scored token but the last predicts the next
            cache = out.past_key_values
            cache.batch_repeat_interleave(len(batch))
            tails = [sequences[i][len(context) : -1] for i in batch]
            ids = torch.tensor([t + [0] * (width - 1 - len(t)) for t in tails], device=model.device)
            attention = torch.tensor([[1] * (len(context) + len(t)) + [0] * (width - 1 - len(t)) for t in tails],
                                     device=model.device)
            positions = torch.arange(len(context), len(context) + width - 1, device=model.device).expand(len(batch), -1)
            logprobs = F.log_softmax(model(input_ids=ids, attention_mask=attention, position_ids=positions,
                                           past_key_values=cache).logits.float(), -1)  # (batch, width - 1, vocab)
            for k, (row, tail) in enumerate(zip(rows, tails)):
                row.extend(logprobs[k, : len(tail)])
        for i, row in zip(batch, rows):
            for here, token in zip(row, sequences[i][len(context) :]):
                top = []
                if top_k:
                    values, tokens = here.topk(top_k)
                    top = [(int(k), float(v)) for k, v in zip(tokens, values)]
                results[i].append(TokenScore(token, float(here[token]), top))


def _score_slice(model, sequences, starts, group: list[int], positions: list[int], top_k: int, results) -> None:
    width = max(len(sequences[i]) for i in group)
    ids = torch.tensor([sequences[i] + [0] * (width - len(sequences[i])) for i in group], device=model.device)
    attention = torch.tensor([[1] * len(sequences[i]) + [0] * (width - len(sequences[i])) for i in group],
                             device=model.device)
    keep = torch.tensor(positions, device=model.device)
    logprobs = F.log_softmax(model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits.float(), -1)
    column = {p: c for c, p in enumerate(positions)}
    for row, i in enumerate(group):
        for t in range(starts[i], len(sequences[i])):
            if (c := column.get(t - 1)) is None:
                continue  # another slice scores it
            token, here = sequences[i][t], logprobs[row, c]
            top = []
            if top_k:
                values, tokens = here.topk(top_k)
                top = [(int(k), float(v)) for k, v in zip(tokens, values)]
            results[i].append(TokenScore(token, float(here[token]), top))
