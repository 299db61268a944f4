"""The llama.cpp backend: GGUF models through llama-cpp-python, decoding and held-out loss.

    seedbed generate --engine llama.cpp --model runs/q4 --greedy "What is 12 plus 30?"
    seedbed serve --engine llama.cpp --model q4=runs/q4/model.gguf

llama.cpp runs quantized weights as they are (no dequantizing), so a Q4_K_M model decodes several times faster
on a CPU than the same weights in PyTorch. Prompts are rendered and tokenized by the model's Hugging Face
tokenizer, exactly as in the torch path, and the token ids are handed to llama.cpp directly (a GGUF carries the
same vocabulary), so both engines see the same tokens. Stopping is the torch backend's: the same
`seedbed.inference.stops.TextTracker` decides where a row ends and what of it is safe to show.

A request with a JSON schema decodes under llama.cpp's own grammar: the schema becomes a GBNF grammar
(llama-cpp-python's `LlamaGrammar.from_json_schema`, compiled once per schema and cached) and a `GrammarGate`
consults llama.cpp's grammar sampler for each token, lazily (see there: checking all 262k tokens of Gemma's
vocabulary every step would cost more than the model's own step). Once the JSON is complete, the grammar allows
only end-of-generation tokens, and the row ends there.

Requests decode together, each in its own llama.cpp sequence, and a prompt that starts with tokens already in the
KV cache (a shared system prompt, few-shot examples, retrieved context) evaluates only the rest (`kv_slots`).

llama-cpp-python is an optional extra that compiles llama.cpp on install; `LlamaCppMissing` says how to get it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import math
import os
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from seedbed.atomic import atomic_dir
from seedbed.chat import Example, end_of_turn_token_ids, ensure_chat_template, tokenize_example
from seedbed.errors import ModelLoadError
from seedbed.extras import LLAMACPP_INSTALL
from seedbed.inference.kv_slots import KvSlots, Slot
from seedbed.inference.request import Request
from seedbed.inference.scores import MAX_TOP, TokenScore
from seedbed.inference.stops import CompiledSchemas, SchemaError, TextTracker
from seedbed.models import embedded_gguf, seedbed_home

INSTALL = LLAMACPP_INSTALL  # one install line for every verb that needs llama.cpp
DEFAULT_CONTEXT = 8192  # tokens of KV cache: serve's default prompt limit (4096) plus its longest answer, with room
LOSS_CHUNK = 128  # tokens per decode when scoring: bounds the logits buffer (chunk x vocab floats; 128 MB for Gemma)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# llama-cpp-python 0.3.36's converter lets a JSON string hold raw control characters, which JSON forbids (a random
# model writes them); upstream llama.cpp's converter excludes them as here.
STRING_CHAR_FIX = (r'char ::= [^"\\] |', r'char ::= [^"\\\x7F\x00-\x1F] |')
N_BATCH = 512  # most tokens one llama_decode takes: a longer prompt joins over several steps (llama.cpp's default)
DEFAULT_SLOTS = 16  # requests decoded together; serve's --max-batch takes fewer
SHORTLIST = 1024  # likeliest tokens a grammar checks before it checks them all (see GrammarGate)


class LlamaCppMissing(ModelLoadError):
    """`--engine llama.cpp` without llama-cpp-python installed."""


def require_llama_cpp():
    """The `llama_cpp` module, or an error that says how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise LlamaCppMissing(
            "--engine llama.cpp needs llama-cpp-python, which is not installed. Install it with\n"
            f"    {INSTALL}\n"
            "It builds llama.cpp from source (about 10 minutes on 2 cores; needs a C++ compiler and cmake). "
            "Or use --engine torch, which runs the same GGUF dequantized."
        ) from None
    return llama_cpp


def find_gguf(name: str) -> Path:
    """The GGUF file a model name means: a `.gguf` file, a directory holding exactly one, or the embedded default.

    >>> find_gguf("runs/q4")  # doctest: +SKIP
    PosixPath('runs/q4/model.gguf')
    """
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"{name}: no such GGUF file")
        return path
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise ModelLoadError(
                f"{name}: no .gguf file in this directory; --engine llama.cpp runs GGUF models. Make one with "
                f"`seedbed quantize --model {name} --method q4_k_m --out DIR`, or use --engine torch")
        raise ModelLoadError(f"{name}: {len(found)} .gguf files in this directory "
                             f"({', '.join(f.name for f in found)}); name the one to run")
    embedded = embedded_gguf(name)
    if embedded is not None:
        return embedded
    raise ModelLoadError(f"{name}: not a .gguf file or a directory holding one; --engine llama.cpp runs GGUF "
                         "models (hub ids and Hugging Face directories need --engine torch)")


def gguf_tokenizer(gguf: Path, model_type: str):
    """The Hugging Face tokenizer of a GGUF model, with a chat template.

    Tokenizer files next to the GGUF (what `seedbed quantize` writes) win; otherwise the tokenizer is rebuilt
    from the GGUF's own vocabulary, which takes a minute for a large vocabulary, so it is cached under
    `$SEEDBED_HOME/tokenizers` the first time.
    """
    from transformers import AutoTokenizer

    if any((gguf.parent / f).is_file() for f in TOKENIZER_FILES):
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent))
    else:
        stat = gguf.resolve().stat()
        key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
        cached = seedbed_home() / "tokenizers" / f"{gguf.stem}-{key}"
        if not (cached / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            with atomic_dir(cached) as tmp:
                tokenizer.save_pretrained(tmp)
        tokenizer = AutoTokenizer.from_pretrained(str(cached))
    ensure_chat_template(tokenizer, model_type)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class LlamaCppBackend:
    """A GGUF model in llama.cpp with its Hugging Face tokenizer, decoding up to `max_batch` requests at once.

    The requests decode together in one llama.cpp context, each in a sequence of its own (`kv_slots`): every step
    is one `llama_decode` of a batch holding each decoding row's next token and chunks of joining rows' prompts
    (at most `n_batch` tokens, so a long prompt joins over several steps without stalling the others). A prompt
    that begins with tokens a slot already holds (a shared system prompt, few-shot examples, retrieved context)
    evaluates only the rest. A prompt's last token is always evaluated in a step after the rest of it, so the same
    request repeated alone gets the same logits whether its prompt was cached or not. Beyond that, as in
    llama-server, which tokens share a `llama_decode` changes rounding (llama.cpp's quantized CPU kernels differ
    by batch size), so under concurrency or a partly cached prompt a quantized model's sampled or near-tied tokens
    may differ from decoding alone; at f32 the answers are the same (tests/test_llamacpp.py).

    >>> backend = LlamaCppBackend("gemma-3-270m", n_threads=2)  # doctest: +SKIP
    >>> generate(backend, ["<bos>The capital of France is"], Sampling(greedy=True, max_new_tokens=5))  # doctest: +SKIP
    [' the capital of the country']
    """

    def __init__(self, name: str, n_threads: int | None = None, n_ctx: int = DEFAULT_CONTEXT,
                 n_slots: int = DEFAULT_SLOTS):
        self.name = name
        self.path = find_gguf(name)  # before the import: a wrong path is worth knowing without installing anything
        self.llama_cpp = llama_cpp = require_llama_cpp()
        from llama_cpp import _internals

        # llama.cpp logs through this logger; `Llama(verbose=False)` quiets it the same way
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        self.threads = n_threads or os.cpu_count() or 1
        context = llama_cpp.llama_context_default_params()
        context.n_ctx, context.n_batch, context.n_ubatch = n_ctx, N_BATCH, N_BATCH
        context.n_threads = context.n_threads_batch = self.threads
        context.n_seq_max, context.kv_unified = n_slots, True  # one cache: a shared prefix's cells serve every slot
        context.swa_full = True  # sliding-window layers (Gemma 3) keep whole prefixes, or none could be reused
        # `Llama`'s default: llama.cpp's "auto" picks flash attention on a CPU, which rounds through f16 (scores moved
        # by 1e-5 against the torch engine at f32)
        context.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        context.no_perf = False  # llama.cpp's own count of evaluated prompt tokens (the tests read it)
        try:
            self.model = _internals.LlamaModel(path_model=str(self.path),
                                               params=llama_cpp.llama_model_default_params(), verbose=False)
            self.context = _internals.LlamaContext(model=self.model, params=context, verbose=False)
        except ValueError as e:  # llama-cpp-python's way of saying the file did not load
            raise ModelLoadError(f"{name}: llama.cpp could not load {self.path}: {e}") from None
        self.batch = _internals.LlamaBatch(n_tokens=N_BATCH, embd=0, n_seq_max=1, verbose=False)
        # Free llama.cpp's memory while the interpreter is still whole: left to `__del__` at exit, it runs after
        # llama_cpp's module globals are gone and prints an ignored TypeError.
        weakref.finalize(self, close_all, self.batch, self.context, self.model)
        self.vocab = self.model.vocab
        self.n_vocab = self.model.n_vocab()
        self.model_type = self.model.metadata().get("general.architecture", "")
        self.tokenizer = gguf_tokenizer(self.path, self.model_type)
        self.eos_ids = set(end_of_turn_token_ids(self.tokenizer))
        self.max_context = min(self.context.n_ctx(), self.model.n_ctx_train())
        self.max_batch = n_slots
        self.slots = KvSlots(self.context, n_slots, self.context.n_ctx())
        self.default_seed = llama_cpp.LLAMA_DEFAULT_SEED  # llama.cpp draws a random seed for this one
        self.schemas = CompiledSchemas()  # each a LlamaGrammar
        self.prompt_tokens_evaluated = 0  # prompt tokens put through the model (a cached prefix is not)

    # --- decoding -----------------------------------------------------------------------------------------

    def decode(self, batch: list[Request], admit=None) -> None:
        """Decode the requests together, each to its end, emitting each one's text as it becomes safe; with `admit`
        (`hf.Admit`), requests that arrive meanwhile join at the next step, as slots and cache room allow.

        Greedy at temperature 0; otherwise temperature then top-p (nucleus) sampling with no top-k, as the torch
        backend samples. A row ends at an end-of-turn token, a stop string, `r.stop_when`, `r.max_tokens`, the
        context size, when `r.cancelled` turns true, or (under `r.json_schema`) once the JSON is complete.
        """
        waiting, rows = deque(batch), []
        try:
            while True:
                if admit is not None:
                    waiting.extend(admit(len(rows) + len(waiting)))
                while waiting:
                    row = self.start(waiting[0], force=not rows)
                    if row is None:
                        break  # no free slot or no room: it waits for a running row to end
                    waiting.popleft()
                    if row is not ENDED:
                        rows.append(row)
                if not rows:
                    return
                rows = self.step(rows)
        finally:
            for row in rows:
                self.finish(row)

    def start(self, r: Request, force: bool):
        """A `SlotRow` for `r` in a free slot with the longest cached prefix of its prompt; `ENDED` if it ended
        before decoding (cancelled, no room for a token, a schema llama.cpp cannot compile); None if it must wait."""
        limit = min(r.max_tokens, self.max_context - len(r.prompt_ids))
        if r.cancelled or limit <= 0 or not r.prompt_ids:
            r.end("cancelled" if r.cancelled else "length")
            return ENDED
        placed = self.slots.place(r.prompt_ids, len(r.prompt_ids) + limit, force)
        if placed is None:
            return None
        slot, reused = placed
        row = SlotRow(r, slot, TextTracker(self.tokenizer, self.eos_ids, r.stop, r.stop_when), limit,
                      pending=list(r.prompt_ids[reused:]))
        try:
            if r.json_schema is not None:
                row.gate = GrammarGate(self.llama_cpp, self.vocab, self.compile_schema(r.json_schema),
                                       r.temperature, r.top_p, r.seed)
            row.sampler = self.sampler_for(r)
        except Exception as error:  # this request's own failure (its schema): not the batch's
            self.finish(row)
            r.fail(error)
            return ENDED
        return row

    def sampler_for(self, r: Request):
        """llama.cpp's sampler chain for `r`: greedy, or temperature, top-p and a draw seeded by `r.seed`."""
        from llama_cpp import _internals

        sampler = _internals.LlamaSampler()
        if r.temperature <= 0:
            sampler.add_greedy()
        else:
            sampler.add_temp(r.temperature)
            sampler.add_top_p(r.top_p, 1)
            # llama.cpp seeds are 32-bit and 0xFFFFFFFF means "draw one"; the API accepts any 64-bit integer.
            sampler.add_dist(r.seed % 0xFFFFFFFF if r.seed is not None else self.default_seed)
        return sampler

    def step(self, rows: list["SlotRow"]) -> list["SlotRow"]:
        """One `llama_decode`: each decoding row's last token, then prompt chunks of joining rows while the batch
        has room; sample a token for every row whose logits came out. Returns the rows still going."""
        lib, batch = self.llama_cpp, self.batch.batch
        going = []
        for row in rows:
            if row.request.cancelled:
                row.request.end("cancelled")
                self.finish(row)
            else:
                going.append(row)
        n, outputs = 0, []
        for row in sorted(going, key=lambda row: bool(row.pending)):  # decoding rows first: they never wait
            if row.pending:
                # The prompt's last token goes in a step after the rest, as it does when the rest was cached: so a
                # request repeated alone gets the very same logits (llama.cpp's quantized kernels round a token
                # differently in a batch of 30 than alone: Gemma's Q4_K logits moved by up to 0.5).
                last = 1 if len(row.pending) > 1 else 0
                take = row.pending[: max(0, min(N_BATCH - n, len(row.pending) - last))]
                if not take:
                    continue
                del row.pending[: len(take)]
                self.prompt_tokens_evaluated += len(take)
            else:
                take = [row.next_id]
            for token in take:
                batch.token[n], batch.pos[n] = token, len(row.slot.tokens)
                batch.seq_id[n][0], batch.n_seq_id[n], batch.logits[n] = row.slot.seq, 1, False
                row.slot.tokens.append(token)
                n += 1
            if not row.pending:
                batch.logits[n - 1] = True
                outputs.append((row, n - 1))
        batch.n_tokens = n
        if n:
            status = lib.llama_decode(self.context.ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode failed with status {status} on a batch of {n} tokens")
        done = set()
        for row, index in outputs:
            try:
                token = self.sample(row, index)
                finished = self.advance(row, token)
            except Exception as error:  # this row's own failure (its settings, its stop_when): not its batch's
                row.request.fail(error)
                finished = True
            if finished:
                self.finish(row)
                done.add(id(row))
            else:
                row.next_id = token
        return [row for row in going if id(row) not in done]

    def sample(self, row: "SlotRow", index: int) -> int:
        """The row's next token from the logits at batch position `index`, after its `logit_bias` and penalties
        (added in llama.cpp's own logits buffer, which its sampler then reads)."""
        import numpy as np

        logits = np.ctypeslib.as_array(self.llama_cpp.llama_get_logits_ith(self.context.ctx, index),
                                       shape=(self.n_vocab,))  # (vocab,), llama.cpp's buffer itself
        ids, deltas = row.request.logit_adjustments()
        if ids:
            logits[ids] += np.asarray(deltas, dtype=np.float32)
        if row.gate is not None:
            return row.gate.choose(logits)
        return self.llama_cpp.llama_sampler_sample(row.sampler.sampler, self.context.ctx, index)

    def advance(self, row: "SlotRow", token: int) -> bool:
        """Give the row its new token; return True (after ending the request) if the row is done."""
        r = row.request
        if r.cancelled:
            r.end("cancelled")
            return True
        # Under a grammar an end-of-generation token is allowed only once the JSON is complete: the row ends
        # there even if the tokenizer does not name that token an end of turn.
        complete = row.gate is not None and self.llama_cpp.llama_vocab_is_eog(self.vocab, token)
        return r.take(token, row.tracker, row.limit, complete)

    def finish(self, row: "SlotRow") -> None:
        """Free the row's slot (its cells stay cached), sampler and grammar."""
        self.slots.release(row.slot)
        if row.sampler is not None:
            row.sampler.close()
        if row.gate is not None:
            row.gate.close()

    def compile_schema(self, schema: dict):
        """llama.cpp's grammar for `schema` (a `LlamaGrammar`), compiled once per schema and cached; a
        `SchemaError` if llama.cpp cannot turn it into a grammar.

        >>> backend.compile_schema({"type": "object"})  # doctest: +SKIP
        """
        return self.schemas.get(schema, self.compile_grammar)

    def compile_grammar(self, schema: dict):
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        try:
            gbnf = json_schema_to_gbnf(json.dumps(anchored(schema)))  # what LlamaGrammar.from_json_schema does
        except Exception as e:  # the converter asserts on what it does not support
            raise SchemaError(f"the JSON schema cannot be turned into a llama.cpp grammar: {e}") from None
        grammar = LlamaGrammar.from_string(gbnf.replace(*STRING_CHAR_FIX), verbose=False)
        # Parse it once here: a grammar llama.cpp rejects would otherwise fail in the middle of a decode.
        sampler = self.llama_cpp.llama_sampler_init_grammar(
            self.vocab, grammar._grammar.encode(), grammar._root.encode())
        if not sampler:
            raise SchemaError("the JSON schema's llama.cpp grammar does not parse")
        self.llama_cpp.llama_sampler_free(sampler)
        return grammar

    # --- scoring ------------------------------------------------------------------------------------------

    def heldout_loss(self, examples: list[Example], max_length: int = 1024, batch_size: int = 1) -> dict:
        """Token-weighted mean cross-entropy over the assistant tokens, as `seedbed.inference.hf.heldout_loss`.

        >>> model.heldout_loss(examples)  # doctest: +SKIP
        {'loss': 1.85, 'perplexity': 6.36, 'tokens': 5120}
        """
        import numpy as np

        total, scored_tokens = 0.0, 0
        for example in examples:
            row = tokenize_example(self.tokenizer, example, max_length)
            ids, mask = row["input_ids"], row["assistant_masks"]
            # Position t predicts token t+1: keep the logits of positions whose next token is scored.
            wanted = [t for t in range(len(ids) - 1) if mask[t + 1]]
            if not wanted:
                continue
            for position, logits in self.logits_at(ids[: wanted[-1] + 1], set(wanted)):
                logits = logits.astype(np.float64)  # (vocab,)
                top = logits.max()
                total += top + math.log(np.exp(logits - top).sum()) - logits[ids[position + 1]]
                scored_tokens += 1
        loss = total / scored_tokens if scored_tokens else math.nan
        return {"loss": loss, "perplexity": math.exp(loss) if scored_tokens else math.nan, "tokens": scored_tokens}

    def score(self, sequences: list[list[int]], starts: list[int], top_k: int = 0) -> list[list[TokenScore]]:
        """log p(token | tokens before it) for each token from its start on, as `TorchBackend.score`."""
        import numpy as np

        if not 0 <= top_k <= MAX_TOP:
            raise ValueError(f"top_k must be between 0 and {MAX_TOP}")
        results = []
        for ids, start in zip(sequences, starts, strict=True):
            if not 1 <= start <= len(ids):
                raise ValueError(f"start {start} is outside 1..{len(ids)} (the first token has no context)")
            scores = []
            for position, logits in self.logits_at(ids[:-1], set(range(start - 1, len(ids) - 1))):
                logits = logits.astype(np.float64)
                top = logits.max()
                logprobs = logits - (top + math.log(np.exp(logits - top).sum()))
                token = ids[position + 1]
                best = np.argpartition(-logprobs, top_k)[:top_k] if top_k else []
                alternatives = sorted(((int(k), float(logprobs[k])) for k in best), key=lambda kv: -kv[1])
                scores.append(TokenScore(token, float(logprobs[token]), alternatives))
            results.append(scores)
        return results

    def logits_at(self, ids: list[int], positions: set[int]):
        """Run `ids` through the model from an empty cache; yield (position, logits) for each wanted position."""
        import numpy as np

        batch = self.batch
        self.slots.clear()
        try:
            for start in range(0, len(ids), LOSS_CHUNK):
                chunk = ids[start : start + LOSS_CHUNK]
                batch.set_batch(chunk, n_past=start, logits_all=False)
                outputs = [i for i in range(len(chunk)) if start + i in positions]
                for i in range(len(chunk)):
                    batch.batch.logits[i] = (start + i) in positions
                if not outputs:  # llama.cpp wants at least one output per batch
                    batch.batch.logits[len(chunk) - 1] = True
                self.context.decode(batch)
                for i in outputs:
                    yield start + i, np.ctypeslib.as_array(self.context.get_logits_ith(i), shape=(self.n_vocab,)).copy()
        finally:
            self.slots.clear()


@dataclass
class SlotRow:
    """One request decoding in a slot: its stop tracker, token limit, prompt tokens not yet evaluated, sampler
    chain or grammar, and the token sampled last (not yet in the cache)."""

    request: Request
    slot: Slot
    tracker: TextTracker
    limit: int
    pending: list[int]
    sampler: object = None  # llama-cpp-python's LlamaSampler
    gate: "GrammarGate | None" = None
    next_id: int = -1


ENDED = object()  # `LlamaCppBackend.start`: the request ended before it decoded


def close_all(*handles) -> None:
    for handle in handles:
        handle.close()


def anchored(schema):
    """`schema` with every `pattern` anchored (`^(...)$`), as llama.cpp's converter requires. A JSON-schema pattern
    matches anywhere in the string; a string that matches it whole is still one the schema accepts."""
    if isinstance(schema, list):
        return [anchored(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: anchored(v) for k, v in schema.items()}
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and not (pattern.startswith("^") and pattern.endswith("$")):
        core = pattern[1:] if pattern.startswith("^") else pattern
        core = core[:-1] if core.endswith("$") and not core.endswith("\\$") else core
        out["pattern"] = f"^({core})$"
    return out


class GrammarGate:
    """One row's JSON grammar in llama.cpp, consulted lazily: it picks the row's token in place of the sampler chain.

    llama.cpp's grammar sampler checks a token by matching its text against the grammar's stacks; applied to all
    262k tokens of Gemma's vocabulary it takes longer than the model's whole decode step. So, as llama.cpp's own
    `common_sampler` does, the token the row would pick without the grammar is checked first; if the grammar
    rejects it, the pick is made again among the allowed of the `SHORTLIST` likeliest tokens, and only if none of
    them is allowed among all tokens. Greedy picks are exactly those of masking every step (the best allowed token
    is in the shortlist whenever any allowed token is). A sampled pick is drawn from a generator seeded by the
    request's seed; a draw the grammar accepts stands (which keeps the masked distribution), one it rejects is
    redrawn from the masked distribution over the shortlist (the tail beyond it dropped, as top-k would).
    """

    def __init__(self, llama_cpp, vocab, grammar, temperature: float, top_p: float, seed: int | None):
        import numpy as np

        self.lib, self.np = llama_cpp, np
        self.sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode())
        if not self.sampler:
            raise SchemaError("the JSON schema's llama.cpp grammar does not parse")
        self.temperature, self.top_p = temperature, top_p
        self.rng = np.random.default_rng(seed)
        self.layout = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
        self.everything = None  # all token ids, made once the grammar first has to check them all
        self.full_checks = 0  # steps that needed every token checked (the benchmark reports them)

    def choose(self, logits) -> int:
        """The row's next token (see `pick`), accepted by the grammar."""
        token = self.pick(logits)
        self.lib.llama_sampler_accept(self.sampler, token)
        return token

    def pick(self, logits) -> int:
        """The row's next token: its unconstrained pick if the grammar allows it; else a pick among the allowed of
        the `SHORTLIST` likeliest tokens; only if none of those is allowed, a pick among all allowed tokens."""
        np = self.np
        logits = np.asarray(logits, dtype=np.float32)
        first = self.draw(logits)
        if self.allowed(np.array([first], dtype=np.int32))[0]:
            return first
        likeliest = np.argpartition(-logits, SHORTLIST)[:SHORTLIST] if len(logits) > SHORTLIST else \
            np.arange(len(logits), dtype=np.int32)
        ok = self.allowed(likeliest.astype(np.int32))
        if not ok.any():
            self.full_checks += 1
            likeliest = np.arange(len(logits), dtype=np.int32)
            ok = self.allowed(likeliest)
        masked = np.full_like(logits, -np.inf)
        masked[likeliest[ok]] = logits[likeliest[ok]]
        return self.draw(masked)

    def allowed(self, ids):
        """Which of token `ids` the grammar allows next (llama.cpp sets the logits of the others to -inf)."""
        np = self.np
        data = np.zeros(len(ids), dtype=self.layout)
        data["id"] = ids
        array = self.lib.llama_token_data_array(data.ctypes.data_as(self.lib.llama_token_data_p), len(ids), -1, False)
        self.lib.llama_sampler_apply(self.sampler, ctypes.byref(array))
        return np.isfinite(data["logit"])

    def draw(self, logits) -> int:
        """Greedy at temperature 0; else temperature and nucleus (top-p) sampling, as `hf.sample` does."""
        np = self.np
        if self.temperature <= 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if self.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            sorted_probs = probs[order]
            outside = np.cumsum(sorted_probs) - sorted_probs > self.top_p
            probs[order[outside]] = 0.0
            probs /= probs.sum()
        return int(self.rng.choice(len(probs), p=probs))

    def close(self) -> None:
        if self.sampler:
            self.lib.llama_sampler_free(self.sampler)
            self.sampler = None
