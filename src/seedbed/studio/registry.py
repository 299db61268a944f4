"""The model registry: every model directory Seedbed wrote under the studio's data directory, found by what it
holds (a `recipe.yaml` beside weights: `config.json`, or a `.gguf` file) and read for its lineage:

    base or teacher ─▶ data (sha256 from metrics.json) ─▶ recipe ─▶ this model ─▶ quantized from it

No database of its own: the files a run wrote are the record, so a model trained from the terminal shows too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SEARCH_DEPTH = 3  # DATA_DIR/runs/NAME is depth 2; a model inside a demo's out, depth 3


@dataclass
class ModelEntry:
    path: str  # relative to the data directory: what recipes and the playground name it by
    kind: str  # the recipe section that made it: finetune, distill, quantize
    source: str  # the base model, teacher or model it was made from
    method: str
    data: list[dict] = field(default_factory=list)  # [{"path", "sha256", "records"}] from metrics.json
    size_bytes: int = 0
    val_loss: float | None = None
    gguf: bool = False


# Entries read before, by model directory, kept while its recipe.yaml and metrics.json are unchanged: parsing a
# hundred recipes costs ~0.9 s with PyYAML's pure-Python loader (measured: benchmarks/studio_pages.py).
_entries: dict[Path, tuple[tuple, ModelEntry | None]] = {}
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it


def find_models(data_dir: Path) -> list[ModelEntry]:
    """Every model directory under `data_dir`, newest first."""
    found = []
    for recipe_file in model_recipes(data_dir):
        stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None
                      for f in (recipe_file, recipe_file.parent / "metrics.json", recipe_file.parent / "config.json"))
        cached = _entries.get(recipe_file.parent)
        if cached is None or cached[0] != stamp:
            cached = _entries[recipe_file.parent] = (stamp, read_entry(data_dir, recipe_file.parent))
        if cached[1] is not None:
            found.append((stamp[0][0], cached[1]))
    return [e for _, e in sorted(found, key=lambda pair: -pair[0])]


def model_recipes(data_dir: Path) -> list[Path]:
    return [p for depth in range(1, SEARCH_DEPTH + 1) for p in data_dir.glob("/".join(["*"] * depth) + "/recipe.yaml")
            if not p.parent.name.startswith(".") and "jobs" not in p.relative_to(data_dir).parts[:1]]


def read_entry(data_dir: Path, model_dir: Path) -> ModelEntry | None:
    ggufs = list(model_dir.glob("*.gguf"))
    if not (model_dir / "config.json").is_file() and not ggufs:
        return None
    try:
        recipe = yaml.load((model_dir / "recipe.yaml").read_text(), Loader=YAML_LOADER) or {}
    except (OSError, yaml.YAMLError):
        return None
    kind = next(iter(recipe), "unknown")
    section = recipe.get(kind) or {}
    source = section.get("base") or section.get("teacher") or section.get("model") or "?"
    method = section.get("method") or section.get("mode") or kind
    entry = ModelEntry(str(model_dir.relative_to(data_dir)), kind, str(source), str(method), gguf=bool(ggufs),
                       size_bytes=sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file()))
    metrics_file = model_dir / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        entry.data = [{"path": f.get("path"), "sha256": f.get("sha256"), "records": f.get("records")}
                      for f in metrics.get("data_files", [])]
        if metrics.get("val"):
            entry.val_loss = metrics["val"][-1]["loss"]
    return entry


def lineage(data_dir: Path, entry: ModelEntry, entries: list[ModelEntry]) -> list[str]:
    """The chain this model came from, oldest first: each step's source, followed while it is a registered model."""
    by_path = {str((data_dir / e.path).resolve()): e for e in entries}
    chain, current, seen = [entry.path], entry, {entry.path}
    while True:
        parent = by_path.get(str((data_dir / current.source).resolve()))
        if parent is None or parent.path in seen:
            chain.append(current.source)
            return chain[::-1]
        chain.append(parent.path)
        seen.add(parent.path)
        current = parent
