"""The chat template's own tokens (turn markers, EOS, tool markers) and whether the model ever learnt their rows.

    found = template_tokens(tokenizer)            # from the tokenizer and its template, never a fixed list
    verdicts = check_model(model, tokenizer)      # each with the numbers, and reasons when under-trained

Why: a base model used with a chat template it was not trained on has turn markers whose embedding rows never
received a gradient in pre-training. In Gemma 3 270M *base*, `<end_of_turn>` (106) has cosine 0.995 with
`<unused1354>` (measured on the embedded Q4_K_M weights). LoRA leaves embedding rows as they are and the output
head is tied to them, so however the adapters move the hidden state, `<end_of_turn>` and its untrained twins get
the same logit: the tuned model emits a twin instead of ending the turn and runs to max_new_tokens (issue 11).
Unsloth ships a fix (re-initialising untrained rows); PEFT has `trainable_token_indices`, which copies the whole
matrix on every step (`seedbed.train.trainable_rows` trains the rows without that, beside the LoRA adapters).

Which tokens: a sample conversation is rendered with `seedbed.chat.tokenize_example`; the special tokens at
labelled (assistant) positions are *produced* (end of turn, an EOS the template appends), those elsewhere are
*read* (start of turn, role markers), and special tokens written literally in the template source that the sample
did not use (tool-call markers) are *template* tokens. BOS is left out: every pre-training document starts with
it, so its row is trained, and no turn depends on it.

How a row is judged, after Land & Bartolo 2024, "Fishing for Magikarp: Automatically Detecting Under-trained
Tokens in Large Language Models" (sec. 3.1): the *reference* rows are tokens no text produces (names such as
`<unused12>`, `<reserved_3>`, `[unused0]`, `<|reserved_special_token_5|>`, and embedding rows past the end of the
tokenizer); *ordinary* rows are the plain vocabulary. A row is under-trained when

- it is near-identical to a reference row (cosine >= NEAR_DUPLICATE), or
- it points where the reference rows point: its cosine with the mean reference row, both centred on the ordinary
  mean (the paper's indicator, with centring in place of removing the first principal component), is above
  ORDINARY_PERCENTILE of ordinary tokens *and* above REFERENCE_PERCENTILE of the reference rows themselves, or
- its norm is below LOW_NORM of the ordinary median (the paper's input-embedding indicator: weight decay shrinks
  rows no gradient holds up; Llama 3 base's reserved rows are near zero).

Measured on Gemma 3 270M (input embedding = output head): `<end_of_turn>` cosine 0.995 with `<unused1354>` and
similarity 0.984 (ordinary 99th percentile 0.535, unused rows' 10th percentile 0.569); `<start_of_turn>` cosine
0.963, similarity 0.914; `<eos>` -0.431. Norms are flat there (all ordinary rows 1.029-1.033), so only the
first two tests speak for Gemma.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from seedbed.chat import Example, tokenize_example

NEAR_DUPLICATE = 0.99  # cosine with a reference row; Gemma's <end_of_turn> is 0.995 after Q4_K_M rounding
ORDINARY_PERCENTILE = 0.99  # of ordinary tokens' similarity to the reference mean
REFERENCE_PERCENTILE = 0.10  # of the reference rows' own similarity; Gemma: 0.569, its <start_of_turn> 0.914
LOW_NORM = 0.5  # of the ordinary tokens' median norm; a random row of width d is within ~1/sqrt(2d) of it
INIT_NOISE = 0.1  # std of the noise added to a mean-initialised row, as a share of the ordinary rows' per-dim std

# Names of tokens no text produces: Gemma's <unused12>, BERT's [unused0], Llama 3's <|reserved_special_token_5|>.
REFERENCE_NAME = re.compile(r"^[<\[]\|?(unused|reserved)[\w\-]*\|?[>\]]$", re.IGNORECASE)

SAMPLE = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is two plus three?"},
    {"role": "assistant", "content": "Five."},
    {"role": "user", "content": "And four plus four?"},
    {"role": "assistant", "content": "Eight."},
]


@dataclass
class TemplateToken:
    id: int
    text: str
    role: str  # "produced" (assistant positions), "read" (prompt positions) or "template" (only in its source)


@dataclass
class Verdict:
    """One template token's rows judged: the numbers measured, and why it is under-trained (empty if it is not)."""

    id: int
    text: str
    role: str
    measures: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def under_trained(self) -> bool:
        return bool(self.reasons)

    def describe(self) -> str:
        """`<end_of_turn>` (106): input row: cosine 0.995 with <unused1354>, <unused844>; ..."""
        return f"{self.text} ({self.id}): " + "; ".join(self.reasons)

    def as_dict(self) -> dict:
        return {"token": self.text, "id": self.id, "role": self.role, "under_trained": self.under_trained,
                "reasons": self.reasons, "measures": self.measures}


def template_tokens(tokenizer) -> list[TemplateToken]:
    """The special tokens the chat template writes, in order of first appearance, each with its role."""
    special = special_ids(tokenizer)
    rendered = _render_sample(tokenizer)
    found: dict[int, str] = {}
    for token, labelled in zip(rendered["input_ids"], rendered["assistant_masks"]):
        if token in special and token != tokenizer.bos_token_id:
            found[token] = "produced" if labelled or found.get(token) == "produced" else "read"
    source = tokenizer.chat_template or ""
    source = "\n".join(source.values()) if isinstance(source, dict) else source
    vocab = tokenizer.get_vocab()
    for text in sorted({t for t in tokenizer.all_special_tokens} | _added_special(tokenizer)):
        i = vocab.get(text)
        if i is not None and i not in found and i != tokenizer.bos_token_id and text in source:
            found[i] = "template"  # e.g. tool-call markers the sample conversation did not need
    names = tokenizer.convert_ids_to_tokens(list(found))
    return [TemplateToken(i, name, role) for (i, role), name in zip(found.items(), names)]


def special_ids(tokenizer) -> set[int]:
    """Ids of special tokens: the tokenizer's named ones and its added tokens marked special."""
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return ids


def _added_special(tokenizer) -> set[str]:
    return {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}


def _render_sample(tokenizer) -> dict:
    """SAMPLE tokenized with labels; without its system turn for templates that refuse one."""
    from jinja2 import TemplateError as JinjaError

    try:
        return tokenize_example(tokenizer, Example("template-tokens", "chat template", SAMPLE))
    except JinjaError:  # a template that refuses a system role (its raise_exception): try without one
        return tokenize_example(tokenizer, Example("template-tokens", "chat template", SAMPLE[1:]))


def reference_ids(tokenizer, num_rows: int) -> list[int]:
    """Rows no text produces: tokens named unused/reserved, and embedding rows past the tokenizer's last id."""
    named = [i for text, i in tokenizer.get_vocab().items() if i < num_rows and REFERENCE_NAME.match(text)]
    return sorted(set(named) | set(range(len(tokenizer), num_rows)))


def ordinary_ids(tokenizer, num_rows: int, reference: list[int]) -> torch.Tensor:
    """The plain vocabulary: every row the tokenizer maps to text, less added/special tokens and the references."""
    keep = torch.zeros(num_rows, dtype=torch.bool)
    keep[: min(len(tokenizer), num_rows)] = True
    drop = [i for i in (set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids) | set(reference))
            if i is not None and 0 <= i < num_rows]
    keep[drop] = False
    return keep.nonzero().flatten()


def judge_rows(weight: torch.Tensor, candidates: list[int], reference: list[int], ordinary: torch.Tensor,
               name=str, what: str = "row") -> dict[int, tuple[dict, list[str]]]:
    """For each candidate row of `weight`: (measures, reasons it is under-trained). `name(id)` names a token.

    `weight` is (rows, width); `reference` the rows no text trains; `ordinary` the plain vocabulary's rows.
    """
    w = weight.detach().float()  # no copy for float32 weights; a bf16 embedding is upcast once
    ordinary = ordinary.to(w.device)
    norms = w.norm(dim=1)  # (rows,)
    ordinary_norms = norms[ordinary]
    median_norm = float(ordinary_norms.median())
    # Mean of ordinary rows without copying them out: the sum of all rows less the others.
    others = torch.ones(len(w), dtype=torch.bool, device=w.device)
    others[ordinary] = False
    mu = (w.sum(0) - w[others].sum(0)) / len(ordinary)  # (width,)
    if reference:
        ref = torch.tensor(reference, device=w.device)
        ref_rows = w[ref]  # (n_ref, width): small (Gemma: 6,242 x 640)
        ref_unit = ref_rows / norms[ref].clamp(min=1e-12)[:, None]
        u = ref_rows.mean(0) - mu  # the direction the reference rows point, centred
        # cos(w_i - mu, u) for every row i, from two matrix-vector products (no centred copy of the matrix)
        centred_norms = (norms.square() - 2 * (w @ mu) + mu.square().sum()).clamp(min=0).sqrt()
        sim = (w @ u - mu @ u) / (centred_norms * u.norm()).clamp(min=1e-12)  # (rows,)
        ordinary_sim, ref_sim = sim[ordinary], sim[ref]
        ordinary_cut = float(torch.quantile(ordinary_sim, ORDINARY_PERCENTILE))
        ref_cut = float(torch.quantile(ref_sim, REFERENCE_PERCENTILE)) if len(ref) > 1 else float(ref_sim[0])
        ref_median = float(ref_sim.median())
    results = {}
    for i in candidates:
        row, reasons = w[i], []
        measures = {"norm": round(float(norms[i]), 4), "norm_ratio": round(float(norms[i]) / median_norm, 4)}
        if reference:
            cos = ref_unit @ (row / norms[i].clamp(min=1e-12))  # (n_ref,)
            top = cos.topk(min(2, len(cos)))
            twins = [(name(reference[j]), float(c)) for c, j in zip(top.values, top.indices)]
            s = float(sim[i])
            above = float((ordinary_sim < s).float().mean())
            measures.update(max_cosine=round(twins[0][1], 4), nearest_reference=twins[0][0],
                            reference_similarity=round(s, 4), ordinary_percentile=round(100 * above, 3))
            close = [f"{n}" for n, c in twins if c >= NEAR_DUPLICATE]
            if close:
                reasons.append(f"{what}: cosine {twins[0][1]:.3f} with {', '.join(close)}")
            if s >= ordinary_cut and s >= ref_cut:
                reasons.append(
                    f"{what}: similarity {s:.3f} to the mean of the {len(reference)} unused rows, above {_pct(above)} "
                    f"of ordinary tokens (unused rows: median {ref_median:.3f})")
        if float(norms[i]) < LOW_NORM * median_norm:
            below = float((ordinary_norms > norms[i]).float().mean())
            reasons.append(f"{what}: norm {float(norms[i]):.3g}, {float(norms[i]) / median_norm:.0%} of the ordinary "
                           f"median {median_norm:.3g} (below {_pct(below)} of ordinary tokens)")
        results[i] = (measures, reasons)
    return results


def _pct(share: float) -> str:
    # Floored, so that 99.995% reads 99.99%, never "100%" for a token some ordinary tokens still exceed.
    return f"{math.floor(share * 10000) / 100:.2f}%"


def embedding_rows(model) -> list[tuple[str, torch.Tensor]]:
    """The matrices whose rows are tokens: ("embedding row (tied with the output head)", W) when tied, else the
    input embedding and the output head."""
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    if out is None or out.weight is inp or out.weight.data_ptr() == inp.data_ptr():
        return [("embedding row (tied with the output head)", inp)]
    return [("input row", inp), ("output row", out.weight)]


def check_model(model, tokenizer, tokens: list[TemplateToken] | None = None) -> list[Verdict]:
    """Judge the rows of each template token (`template_tokens(tokenizer)` unless given)."""
    tokens = template_tokens(tokenizer) if tokens is None else tokens
    matrices = embedding_rows(model)
    rows = matrices[0][1].shape[0]
    tokens = [t for t in tokens if t.id < rows]
    reference = reference_ids(tokenizer, rows)
    ordinary = ordinary_ids(tokenizer, rows, reference)
    verdicts = {t.id: Verdict(t.id, t.text, t.role) for t in tokens}

    def name(i: int) -> str:
        return tokenizer.convert_ids_to_tokens(i) if i < len(tokenizer) else f"row {i} (past the tokenizer)"

    with torch.no_grad():
        for what, weight in matrices:
            judged = judge_rows(weight, [t.id for t in tokens], reference, ordinary, name, what)
            for i, (measures, reasons) in judged.items():
                key = "input" if what == "input row" else "output" if what == "output row" else "embedding"
                verdicts[i].measures[key] = measures
                verdicts[i].reasons += reasons
    return list(verdicts.values())


def init_from_mean(model, tokenizer, ids: list[int], seed: int) -> None:
    """Set rows `ids` of the input embedding (and of an untied output head) to the mean of the ordinary rows plus
    small seeded noise (INIT_NOISE of the per-dimension std), as Unsloth's `fix_untrained_tokens` does (it uses the
    mean alone; the noise keeps two re-initialised markers apart, so start and end of turn stay distinguishable)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, weight in embedding_rows(model):
            ordinary = ordinary_ids(tokenizer, weight.shape[0], reference_ids(tokenizer, weight.shape[0]))
            rows = weight.detach()[ordinary.to(weight.device)].float()  # a copy (Gemma: 0.7 GB), once, before training
            mean, std = rows.mean(0), rows.std(0)
            del rows
            noise = torch.randn(len(ids), weight.shape[1], generator=generator).to(weight.device)
            weight[torch.tensor(ids, device=weight.device)] = (mean + INIT_NOISE * std * noise).to(weight.dtype)
