"""The licence a model is under, carried from its base into every model card and Modelfile Seedbed writes.

A tuned, distilled or quantized model is a derivative of its base, so it carries the base's terms. For the
embedded default (Gemma 3 270M) that is the Gemma Terms of Use, which ask a redistributor to pass on a notice
pointing to them (section 3.1). Where a licence comes from, first match wins:

- the embedded default: Gemma Terms of Use;
- a local directory with a model card whose front matter says `license:` (so the terms follow a chain of
  fine-tunes), or a Gemma-family config.json (every Gemma release is under the Gemma Terms of Use);
- a hub id whose model card is in the local Hugging Face cache: its `license:`;
- otherwise "other", naming where to look.

The `license:` values are the Hugging Face Hub's identifiers (`gemma`, `apache-2.0`, `other` + `license_name`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from seedbed.models import DEFAULT_MODEL


@dataclass(frozen=True)
class Licence:
    id: str  # the Hub's `license:` identifier
    name: str
    link: str | None = None
    notice: str | None = None  # the sentence the terms ask every copy to carry

    def front_matter(self) -> str:
        """`license:` lines for a model card's YAML front matter (the Hub wants a name and link with `other`)."""
        lines = [f"license: {self.id}"]
        if self.id == "other":
            lines.append(f"license_name: {json.dumps(self.name)}")
            if self.link:
                lines.append(f"license_link: {self.link}")
        return "\n".join(lines)

    def section(self, base: str) -> str:
        """A model card's `## Licence` section."""
        where = f" ({self.link})" if self.link else ""
        text = f"## Licence\n\nA derivative of `{base}`, under its terms: {self.name}{where}."
        return text + (f"\n\n{self.notice}\n" if self.notice else "\n")


GEMMA = Licence(
    "gemma", "Gemma Terms of Use", "https://ai.google.dev/gemma/terms",
    notice="Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms",
)

# Hub identifiers of common licences, for a card that gives `license:` alone
NAMES = {"gemma": GEMMA, "apache-2.0": Licence("apache-2.0", "Apache License 2.0",
                                               "https://www.apache.org/licenses/LICENSE-2.0"),
         "mit": Licence("mit", "MIT License", "https://opensource.org/license/mit")}


def licence_of(model: str) -> Licence:
    """The licence a model named as a model flag is under.

    >>> licence_of("gemma-3-270m").name
    'Gemma Terms of Use'
    """
    if model == DEFAULT_MODEL:
        return GEMMA
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        path = path.parent
    if path.is_dir():
        found = card_licence(path / "README.md")
        if found is not None:
            return found
        try:
            model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
        except (OSError, ValueError):
            model_type = ""
        if model_type.startswith("gemma"):
            return GEMMA
        return Licence("other", f"unknown: {model} has no model card that names its licence")
    card = hub_card(model)
    found = card_licence(card) if card is not None else None
    return found or Licence("other", f"see the model's page for {model}", f"https://huggingface.co/{model}")


def card_licence(card: Path) -> Licence | None:
    """The licence a model card's YAML front matter names (None when it has no card or no `license:`)."""
    try:
        text = card.read_text()
    except OSError:
        return None
    match = re.match(r"---\n(.*?)\n---", text, re.S)
    if not match:
        return None
    import yaml

    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return None
    given = meta.get("license") if isinstance(meta, dict) else None
    if not isinstance(given, str):
        return None
    if given == "other":
        return Licence("other", str(meta.get("license_name", "other")), meta.get("license_link"))
    return NAMES.get(given, Licence(given, given))


def hub_card(repo_id: str) -> Path | None:
    """A hub model's README.md if the local Hugging Face cache holds it (nothing is downloaded here)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "README.md")
    except (ValueError, OSError):  # an id the hub would refuse (HFValidationError): no card, as for an unknown one
        return None
    return Path(found) if isinstance(found, str) else None
