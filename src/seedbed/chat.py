"""The canonical chat form every reader produces, the chat templates, and turning a chat into tokens.

Every instruction-data shape (dolly, alpaca, self-instruct, GSM8K, OpenAI chat) becomes an `Example` whose
`messages` are OpenAI-style `{"role", "content"}` turns. Plain `text` records stay raw text (continued
pre-training): they are trained on whole, with no template.

Chat templates: a tokenizer's own template always wins. A base model usually has none, so we set a documented
default that fits its family and save it with every model we write:

- Gemma (`model_type` starting with "gemma"): Gemma's own turn markers, `<start_of_turn>user ... <end_of_turn>`
  and `<start_of_turn>model ...`, which are single tokens in Gemma's vocabulary. Gemma has no system role; as
  in Google's template, a system message is prepended to the first user turn.
- Anything else: ChatML (`<|im_start|>role ... <|im_end|>`), followed by the tokenizer's EOS after each
  assistant turn so that generation stops there even where `<|im_end|>` is not one token.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from typing import Literal

from seedbed.errors import TemplateError

Role = Literal["system", "user", "assistant", "tool"]
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Example:
    """One training example in canonical form.

    `source` says where it came from (`file:line`), so any later error or report can point back to it.
    Exactly one of `messages` (a chat) or `text` (raw text) is set.
    """

    id: str
    source: str
    messages: list[dict[str, str]] = field(default_factory=list)
    text: str | None = None
    category: str | None = None

    @property
    def is_chat(self) -> bool:
        return self.text is None

    def prompt_messages(self) -> list[dict[str, str]]:
        """The conversation up to (not including) the last assistant turn: what a model is asked."""
        last = max(i for i, m in enumerate(self.messages) if m["role"] == "assistant")
        return self.messages[:last]

    def reference(self) -> str:
        """The last assistant turn: the answer a model should give."""
        return [m for m in self.messages if m["role"] == "assistant"][-1]["content"]


GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

CHATML_TEMPLATE = (
    "{{ bos_token if bos_token else '' }}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>\n' }}"
    "{%- if message['role'] == 'assistant' and eos_token -%}{{ eos_token }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)


def default_template(model_type: str) -> tuple[str, list[str]]:
    """The default chat template for a model family, and the strings that end an assistant turn."""
    if model_type.startswith("gemma"):
        return GEMMA_TEMPLATE, ["<end_of_turn>"]
    return CHATML_TEMPLATE, ["<|im_end|>"]


def ensure_chat_template(tokenizer, model_type: str) -> bool:
    """Give `tokenizer` a chat template if it has none. Returns True if one was set.

    >>> ensure_chat_template(tok, "gemma3_text")  # doctest: +SKIP
    True
    """
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template, _ = default_template(model_type)
    return True


def end_of_turn_strings(tokenizer) -> list[str]:
    """Strings after which generation should stop: the end-of-turn marker the template uses, if any."""
    template = tokenizer.chat_template or ""
    return [s for s in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>") if s in template]


def end_of_turn_token_ids(tokenizer) -> list[int]:
    """Token ids that end a turn: EOS plus the template's end-of-turn marker when it is a single token."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return list(dict.fromkeys(ids + single_token_ids(tokenizer, end_of_turn_strings(tokenizer))))


def single_token_ids(tokenizer, strings: list[str]) -> list[int]:
    """Ids of those `strings` that are one token of the vocabulary (special tokens such as `<end_of_turn>`).

    One lookup per string, not `get_vocab()`: that builds a dict of the whole vocabulary (262k entries for Gemma,
    a third of a second), and a decode tracker asks for every request."""
    ids = []
    for text in strings:
        token_id = tokenizer.convert_tokens_to_ids(text)
        if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == text:
            ids.append(token_id)
    return ids


def render_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The text a model continues to answer `messages` (generation prompt included); `tools` (OpenAI's `tools`
    entries) go to the template's own `tools` argument, for a template that takes one (`template_takes_tools`)."""
    if tools:
        return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def template_takes_tools(tokenizer) -> bool:
    """Whether the chat template renders the tools itself: it reads a `tools` variable, as the templates of
    tool-calling models (Qwen 2.5, Hermes, Llama 3.1, SmolLM3) do. Found by jinja2's own analysis of the template.

    >>> template_takes_tools(tok)  # doctest: +SKIP
    False
    """
    import jinja2
    import jinja2.meta

    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        return False
    # transformers' `{% generation %}` tag (assistant masks) is an extension plain jinja2 does not know
    template = re.sub(r"{%-?\s*(end)?generation\s*-?%}", "", template)
    try:
        parsed = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except jinja2.TemplateSyntaxError:
        return False
    return "tools" in jinja2.meta.find_undeclared_variables(parsed)


def tokenize_example(tokenizer, example: Example, max_length: int | None = None) -> dict[str, list[int]]:
    """Tokens of one example and a mask that is 1 exactly on the tokens the model should learn to produce.

    Chats are rendered turn by turn: for each assistant turn the text up to its generation prompt is a
    prompt (mask 0) and the text the turn adds, its end-of-turn marker included, is the answer (mask 1), so
    the model learns to answer and to stop. This works with any template whose renderings of a conversation
    prefix are prefixes of the whole, which holds for every common template; we check it and say so if not.
    Raw text examples are trained on whole, with BOS and EOS around them.

    >>> tokenize_example(tok, Example("a", "x:1", [{"role": "user", "content": "Hi"},
    ...                                           {"role": "assistant", "content": "Hello"}]))  # doctest: +SKIP
    {'input_ids': [...], 'assistant_masks': [0, 0, ..., 1, 1, 1]}
    """
    if not example.is_chat:
        ids = tokenizer(example.text, add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        pieces = [(ids, 1)]
    else:
        pieces = []
        done = ""  # text already turned into pieces
        messages = example.messages
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise TemplateError(
                    f"{example.source}: the chat template does not render conversation prefixes as prefixes of "
                    "the whole, so assistant tokens cannot be located; use a template without look-ahead"
                )
            pieces.append((_encode(tokenizer, prompt[len(done) :]), 0))
            pieces.append((_encode(tokenizer, full[len(prompt) :]), 1))
            done = full
        whole = tokenizer.apply_chat_template(messages, tokenize=False)
        if whole[len(done) :]:
            pieces.append((_encode(tokenizer, whole[len(done) :]), 0))
    input_ids = [t for ids, _ in pieces for t in ids]
    mask = [m for ids, m in pieces for _ in ids]
    if max_length is not None:
        input_ids, mask = input_ids[:max_length], mask[:max_length]
    return {"input_ids": input_ids, "assistant_masks": mask}


def _encode(tokenizer, text: str) -> list[int]:
    # The templates write BOS themselves, so the tokenizer must not add another.
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
