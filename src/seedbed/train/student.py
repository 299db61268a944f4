"""Students for distillation: a model you name, or a smaller copy of the teacher built from the teacher's weights.

    seedbed distill --teacher runs/tuned --student keep-every-2 --data train.jsonl --out runs/student

A preset keeps the teacher's tokenizer (the vocabulary is never cut), so teacher and student distributions are
over the same tokens, and initialises every student weight from a teacher weight:

- `keep-every-K` keeps the full width and one decoder layer in K (DistilBERT, Sanh et al. 2019, initialises its
  student from one layer in two of BERT).
- `narrow-half` / `narrow-third` also cut the hidden size, MLP size and attention heads (head_dim kept) by 2 / 3,
  and initialise each weight by *weight selection* (Xu et al. 2024, "Initializing Models with Larger Ones"):
  evenly spaced slices of the teacher weight along every reduced dimension, the same slice of a dimension
  everywhere it appears, so the selected neurons stay wired to each other. The embedding is sliced too, which is
  what brings a model whose embedding dominates (Gemma 3 270M: 262,144 x 640 = 168M of 268M) under 40%.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Preset:
    layer_stride: int  # keep one decoder layer in this many
    width_divisor: int  # hidden size, MLP size and attention heads divided by this (1: full width)
    summary: str


# Model presets are data. Parameter ratios measured on Gemma 3 270M's config (`student_config` + count).
PRESETS: dict[str, Preset] = {
    "keep-every-2": Preset(2, 1, "full width, every 2nd layer (DistilBERT-style); "
                                 "Gemma 3 270M: 9 of 18 layers, 218M, 81% of the parameters"),
    "keep-every-3": Preset(3, 1, "full width, every 3rd layer; Gemma 3 270M: 6 of 18 layers, 201M, 75% of the parameters"),
    "narrow-half": Preset(2, 2, "half width (hidden, MLP, heads), every 2nd layer, weight selection; "
                                "Gemma 3 270M: 97M, 36% of the parameters"),
    "narrow-third": Preset(2, 3, "a third of the width, every 2nd layer, weight selection; "
                                 "Gemma 3 270M: 60M, 22% of the parameters"),
}


def parse_preset(name: str) -> Preset | None:
    """The preset called `name`, or None when `name` is a model rather than a preset."""
    if name in PRESETS:
        return PRESETS[name]
    m = re.fullmatch(r"keep-every-(\d+)", name)
    if m and int(m.group(1)) >= 2:
        return Preset(int(m.group(1)), 1, f"full width, every {m.group(1)}th layer")
    return None


def kept_layers(num_layers: int, stride: int) -> list[int]:
    """Which teacher layers a student of one layer in `stride` keeps: ceil(L / stride) layers, evenly spaced from
    the first to the last.

    The first layer is the only one that reads the embedding as it is, and the last writes what the output head
    (shared with the teacher, often tied to the embedding) reads, so keeping both leaves both ends of the residual
    stream as the teacher had them; the layers between are one in `stride`, as DistilBERT's one in two. On Gemma 3
    it also keeps the last layer, which is a global-attention one (its pattern is 5 sliding + 1 global).

    >>> kept_layers(18, 2)
    [0, 2, 4, 6, 8, 11, 13, 15, 17]
    >>> kept_layers(4, 2)
    [0, 3]
    """
    n = max(1, math.ceil(num_layers / stride))
    if n == 1:
        return [0]
    return [round(i * (num_layers - 1) / (n - 1)) for i in range(n)]


def evenly_spaced(total: int, n: int) -> list[int]:
    """n of range(total), evenly spaced from 0: the weight-selection indices of a reduced dimension."""
    return [i * total // n for i in range(n)]


def student_config(teacher_config, preset: Preset):
    """The teacher's config with fewer layers (and, for narrow presets, smaller sizes); everything else the same."""
    c = teacher_config.to_dict()
    layers = kept_layers(teacher_config.num_hidden_layers, preset.layer_stride)
    c["num_hidden_layers"] = len(layers)
    if isinstance(c.get("layer_types"), list):  # Gemma 3, Qwen 2...: each kept layer keeps its attention type
        c["layer_types"] = [teacher_config.layer_types[i] for i in layers]
    if "max_window_layers" in c and c["max_window_layers"] is not None:  # Qwen 2: layers below use sliding windows
        c["max_window_layers"] = sum(1 for i in layers if i < teacher_config.max_window_layers)
    if preset.width_divisor > 1:
        d = preset.width_divisor
        heads, kv = teacher_config.num_attention_heads, _kv_heads(teacher_config)
        c["head_dim"] = _head_dim(teacher_config)  # kept: RoPE and query scaling depend on it
        c["num_key_value_heads"] = max(1, kv // d)
        # A multiple of the kv heads, at most the query heads that the kept kv heads serve.
        per_group = max(1, min(heads // kv, (heads // d) // c["num_key_value_heads"]))
        c["num_attention_heads"] = c["num_key_value_heads"] * per_group
        c["hidden_size"] = _round_down(teacher_config.hidden_size // d, 8 * c["num_attention_heads"])
        c["intermediate_size"] = _round_down(teacher_config.intermediate_size // d, 8)
    return type(teacher_config).from_dict(c)


def build_student(teacher, preset: Preset):
    """A student model initialised from `teacher` (a loaded causal LM) by `preset`, and the teacher layers it kept.

    >>> student, layers = build_student(teacher, PRESETS["keep-every-2"])  # doctest: +SKIP
    """
    from transformers import AutoModelForCausalLM

    config = student_config(teacher.config, preset)
    layers = kept_layers(teacher.config.num_hidden_layers, preset.layer_stride)
    from transformers.initialization import no_init_weights

    # Built on the CPU (not the meta device), so that buffers that are not weights (RoPE frequencies, Gemma's
    # embedding scale) are computed for the student's own sizes; random initialisation is skipped, as every weight
    # is overwritten from the teacher below (it took a minute for Gemma 3 270M on 2 cores).
    with no_init_weights():
        student = AutoModelForCausalLM.from_config(config, dtype=next(teacher.parameters()).dtype)
    source = teacher.state_dict()
    sel = _selections(teacher.config, config)
    weights = {}
    for name, shape in ((n, t.shape) for n, t in student.state_dict().items()):
        teacher_name = _teacher_name(name, layers)
        if teacher_name not in source:
            raise ValueError(f"student weight {name}: no teacher weight {teacher_name} to initialise it from")
        weights[name] = _select(name, source[teacher_name], shape, sel).clone()
    student.load_state_dict(weights, strict=True)
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    student.generation_config = teacher.generation_config
    return student.to(next(teacher.parameters()).device), layers


def count_parameters(model_or_config) -> int:
    """Parameters of a model, or of the model a config describes (built on the meta device: no memory used)."""
    if hasattr(model_or_config, "parameters"):
        return sum(p.numel() for p in model_or_config.parameters())
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_or_config)
    return sum(p.numel() for p in model.parameters())


# Which role each dimension of a weight plays, by the weight's name (Llama, Gemma 3, Qwen 2, Mistral share these
# names): "hidden", "mlp", "q" (query heads x head_dim), "kv" (kv heads x head_dim), or None (never reduced).
ROLES = [
    (r"embed_tokens\.weight$|lm_head\.weight$", (None, "hidden")),
    (r"q_proj\.weight$", ("q", "hidden")),
    (r"[kv]_proj\.weight$", ("kv", "hidden")),
    (r"q_proj\.bias$", ("q",)),
    (r"[kv]_proj\.bias$", ("kv",)),
    (r"o_proj\.weight$", ("hidden", "q")),
    (r"(gate|up)_proj\.weight$", ("mlp", "hidden")),
    (r"down_proj\.weight$", ("hidden", "mlp")),
    (r"[qk]_norm\.weight$", (None,)),  # per head, over head_dim: unchanged
    (r"norm\.weight$", ("hidden",)),  # every other norm is over the hidden size
]


def _selections(teacher, student) -> dict[str, list[int]]:
    """Indices of the teacher kept along each role's dimension, the same everywhere the dimension appears."""
    head_dim = _head_dim(teacher)
    heads, kv = teacher.num_attention_heads, _kv_heads(teacher)
    s_heads, s_kv = student.num_attention_heads, _kv_heads(student)
    # kv heads first, then query heads within the groups of the kept kv heads, so each kept query head still
    # attends with the kv head it was trained with (grouped-query attention).
    kept_kv = evenly_spaced(kv, s_kv)
    group, s_group = heads // kv, s_heads // s_kv
    kept_q = [g * group + j for g in kept_kv for j in evenly_spaced(group, s_group)]
    per_head = lambda hs: [h * head_dim + i for h in hs for i in range(head_dim)]  # noqa: E731
    return {
        "hidden": evenly_spaced(teacher.hidden_size, student.hidden_size),
        "mlp": evenly_spaced(teacher.intermediate_size, student.intermediate_size),
        "q": per_head(kept_q),
        "kv": per_head(kept_kv),
    }


def _select(name: str, weight: torch.Tensor, shape: torch.Size, sel: dict[str, list[int]]) -> torch.Tensor:
    if weight.shape == shape:
        return weight
    roles = next((r for pattern, r in ROLES if re.search(pattern, name)), None)
    if roles is None or len(roles) != weight.dim():
        raise ValueError(f"{name}: cannot narrow a weight of shape {tuple(weight.shape)} to {tuple(shape)} "
                         "(not a weight name this preset knows)")
    for dim, role in enumerate(roles):
        if role is not None and weight.shape[dim] != shape[dim]:
            weight = weight.index_select(dim, torch.tensor(sel[role], device=weight.device))
    if weight.shape != shape:
        raise ValueError(f"{name}: selected shape {tuple(weight.shape)}, expected {tuple(shape)}")
    return weight


def _teacher_name(name: str, layers: list[int]) -> str:
    return re.sub(r"\.layers\.(\d+)\.", lambda m: f".layers.{layers[int(m.group(1))]}.", name)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _kv_heads(config) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def _round_down(n: int, multiple: int) -> int:
    return max(multiple, n // multiple * multiple)
