"""Data sets on the Hugging Face Hub wherever a data file is accepted: `hf:OWNER/NAME[/CONFIG][:SPLIT]`.

    seedbed data prepare hf:databricks/databricks-dolly-15k --out runs/dolly
    seedbed eval --data hf:openai/gsm8k/main:test ...
    seedbed finetune --data databricks/databricks-dolly-15k ...   # bare: when no local path has that name

`datasets.load_dataset` fetches the split (or finds it in its cache; `HF_DATASETS_OFFLINE=1` uses only the cache),
and its rows are written once as JSON Lines under `$SEEDBED_HOME/datasets/`, so the readers read them as any
other file: every record gets a line number, a shape and a sha256, and a bad one is named. The split defaults
to `train`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from seedbed.atomic import atomic_path
from seedbed.errors import DataError, MissingExtra

PREFIX = "hf:"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".gz", ".txt")
_ID = r"[\w.-]+/[\w.-]+(?:/[\w.-]+)?(?::[\w.-]+)?"  # owner/name[/config][:split]


@dataclass(frozen=True)
class HubDataset:
    repo: str  # owner/name
    config: str | None
    split: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo}" + (f"/{self.config}" if self.config else "") + f":{self.split}"


def hub_dataset(given: str | Path) -> HubDataset | None:
    """The Hub data set a data path names: any `hf:` path, or a bare `owner/name` no local path has.

    >>> hub_dataset("hf:openai/gsm8k/main:test")
    HubDataset(repo='openai/gsm8k', config='main', split='test')
    >>> hub_dataset("databricks/databricks-dolly-15k").split, hub_dataset("train.jsonl"), hub_dataset("no/such.jsonl")
    ('train', None, None)
    """
    text = str(given)
    if text.startswith(PREFIX):
        text = text[len(PREFIX):]
        if not re.fullmatch(_ID, text):
            raise DataError(f"{given}: a Hub data set is hf:OWNER/NAME[/CONFIG][:SPLIT]")
    elif (not isinstance(given, str) or Path(text).expanduser().exists() or not re.fullmatch(_ID, text)
          or text.lower().endswith(DATA_SUFFIXES)):  # `data/train.jsonl` that is missing is a missing file
        return None
    name, _, split = text.partition(":")
    owner, repo, *config = name.split("/")
    return HubDataset(f"{owner}/{repo}", config[0] if config else None, split or "train")


def hub_dataset_file(dataset: HubDataset) -> Path:
    """The data set's split as a JSON Lines file (one record a line, in the data set's order)."""
    from seedbed.models import seedbed_home

    try:
        import datasets
    except ModuleNotFoundError:
        raise MissingExtra(f"{dataset}: reading a Hub data set needs the datasets library: "
                           "pip install 'seedbed[data]'") from None
    try:
        rows = datasets.load_dataset(dataset.repo, dataset.config, split=dataset.split)
    except (OSError, ValueError) as e:  # offline, no such repository, config or split: the library says which
        raise DataError(f"{dataset}: no such local file or directory, and the Hugging Face Hub data set could not "
                        f"be loaded: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    target = (seedbed_home() / "datasets" / dataset.repo.replace("/", "--")
              / f"{dataset.config or 'default'}-{dataset.split}.jsonl")
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return target
