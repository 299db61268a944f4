"""The eval table in a model's own card: `seedbed eval` appends it to the README.md that `seedbed finetune` (or
`distill`) wrote, in a marked section that the next eval replaces, so a model directory carries its latest scores.

Only a Seedbed model card is touched (its front matter's `tags` include `seedbed`); any other directory, README or
model name is left as it is.

>>> replace_section("# Card\\n", "## Evaluation\\n\\n| a |")
'# Card\\n\\n<!-- seedbed eval: begin ... -->\\n## Evaluation\\n\\n| a |\\n<!-- seedbed eval: end -->\\n'
"""

from __future__ import annotations

from pathlib import Path

import yaml

from seedbed.atomic import atomic_write_text

BEGIN = "<!-- seedbed eval: begin ... -->"  # the "..." is literal: it marks where the next eval's table goes
END = "<!-- seedbed eval: end -->"
BEGIN_LINE = "<!-- seedbed eval: begin"  # what a begin marker starts with, however its tail reads


def is_seedbed_card(text: str) -> bool:
    """A model card Seedbed wrote: YAML front matter whose `tags` include `seedbed`.

    >>> is_seedbed_card("---\\nlibrary_name: transformers\\ntags: [seedbed, lora]\\n---\\n# Card"), is_seedbed_card("# Mine")
    (True, False)
    """
    if not text.startswith("---\n") or (end := text.find("\n---", 4)) < 0:
        return False
    try:
        front = yaml.safe_load(text[4:end])
    except yaml.YAMLError:
        return False
    return isinstance(front, dict) and isinstance(front.get("tags"), list) and "seedbed" in front["tags"]


def replace_section(card: str, section: str) -> str:
    """`card` with `section` between the markers: in place of the marked section an earlier eval wrote, else
    appended after a blank line."""
    block = f"{BEGIN}\n{section.strip()}\n{END}\n"
    start = card.find(BEGIN_LINE)
    if start < 0:
        return card.rstrip("\n") + "\n\n" + block
    stop = card.find(END, start)
    rest = "" if stop < 0 else card[stop + len(END):].lstrip("\n")  # a begin with no end: it ran to the end
    return card[:start] + block + (("\n" + rest) if rest else "")


def write_card_section(model: str, section: str) -> Path | None:
    """Put `section` (Markdown) in the card of model directory `model`, atomically; the card's path, or None
    when `model` is not a directory with a Seedbed model card (nothing is written then)."""
    card = Path(model) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8")
    if not is_seedbed_card(text):
        return None
    atomic_write_text(card, replace_section(text, section))
    return card
