"""An Ollama `Modelfile` beside every GGUF Seedbed writes, so `ollama create` serves it as we do.

    seedbed quantize --model runs/demo/model --method q4_k_m --out runs/demo-q4
    cd runs/demo-q4 && ollama create demo -f Modelfile && ollama run demo

Ollama's TEMPLATE is a Go template, not the Jinja chat template in the tokenizer, so it cannot be derived from
it; the formats our models use (`seedbed.chat`: Gemma's turn markers, ChatML for the rest; Phi-3's `<|end|>`
turns in the test models) are written here as Go templates that lay a conversation out as the Jinja one does
(a system message joins the first user turn for Gemma, as in Google's template). BOS is not in them: llama.cpp adds it from the GGUF's `add_bos_token`.
A tokenizer with some other template gets ChatML, and the Modelfile says it is a guess. Stop strings are
the template's end-of-turn markers (`chat.end_of_turn_strings`); the licence is the base model's.
"""

from __future__ import annotations

import json
from pathlib import Path

from seedbed.atomic import atomic_write_text
from seedbed.chat import end_of_turn_strings
from seedbed.licences import Licence
from seedbed.recipe import GenerateRecipe

# Go templates over Ollama's `.Messages` (each has .Role and .Content); `$sys` carries a system message into
# the next user turn. Literal text is exact: every newline below is one the Jinja template writes too.
GEMMA_GO = (
    '{{ $sys := "" }}{{ range .Messages }}'
    '{{ if eq .Role "system" }}{{ $sys = printf "%s\\n\\n" .Content }}'
    '{{ else if eq .Role "assistant" }}<start_of_turn>model\n{{ .Content }}<end_of_turn>\n'
    '{{ else }}<start_of_turn>user\n{{ $sys }}{{ .Content }}<end_of_turn>\n{{ $sys = "" }}'
    '{{ end }}{{ end }}<start_of_turn>model\n'
)
CHATML_GO = (
    '{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n'
)
# `<|role|> ... <|end|>`: Phi-3's turn format, which the test models (`seedbed.tiny`) use
ROLE_END_GO = '{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n'
TEMPLATES = {"<start_of_turn>": GEMMA_GO, "<|im_start|>": CHATML_GO, "<|end|>": ROLE_END_GO}  # Jinja marker -> Go
CONTEXT = 8192  # num_ctx: llama.cpp engine's default context (inference.llamacpp.DEFAULT_CONTEXT), or the model's if shorter


def modelfile(gguf_name: str, chat_template: str, stops: list[str], licence: Licence, context: int) -> str:
    """The text of a Modelfile for `gguf_name` (a file beside it).

    >>> from seedbed.licences import GEMMA
    >>> text = modelfile("model.gguf", "<start_of_turn>user ...", ["<end_of_turn>"], GEMMA, 8192)
    >>> text.splitlines()[0], 'PARAMETER stop "<end_of_turn>"' in text
    ('FROM ./model.gguf', True)
    """
    marker = next((m for m in TEMPLATES if m in chat_template), None)
    lines = [f"FROM ./{gguf_name}", ""]
    if marker is None:
        lines.append("# The tokenizer's chat template is neither Gemma's nor ChatML: ChatML below is a guess.")
    template = TEMPLATES[marker or "<|im_start|>"]
    lines += [f'TEMPLATE """{template}"""', ""]
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    sampling = GenerateRecipe.model_fields  # `seedbed generate`'s defaults, so both sample alike
    lines += [f"PARAMETER num_ctx {context}", f"PARAMETER temperature {sampling['temperature'].default}",
              f"PARAMETER top_p {sampling['top_p'].default}", ""]
    notice = licence.notice or f"{licence.name}" + (f" ({licence.link})" if licence.link else "")
    lines += [f'LICENSE """{notice}"""', ""]
    return "\n".join(lines)


def write_modelfile(out_dir: Path, tokenizer, config, licence: Licence, gguf_name: str = "model.gguf") -> Path:
    """Write `out_dir/Modelfile` for the GGUF there, from the tokenizer (template, stops) and config (context)."""
    stops = end_of_turn_strings(tokenizer) or ([tokenizer.eos_token] if tokenizer.eos_token else [])
    context = min(CONTEXT, getattr(config, "max_position_embeddings", None) or CONTEXT)
    path = Path(out_dir) / "Modelfile"
    atomic_write_text(path, modelfile(gguf_name, tokenizer.chat_template or "", stops, licence, context))
    return path
