"""The compare page: two or more registered models side by side, picked on the Models page
(`/compare?model=runs/a&model=runs/b`): their lineage, the recipe fields that differ (the same ones are counted,
not listed), every figure their runs measured (seedbed.studio.quality), and the eval tables from their cards."""

from __future__ import annotations

from html import escape

import yaml
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from seedbed.evaluate.card import BEGIN_LINE, END
from seedbed.studio.layout import studio_page
from seedbed.studio.models_page import card_html
from seedbed.studio.quality import gather, lower_is_better
from seedbed.studio.registry import YAML_LOADER, find_models, lineage

router = APIRouter()
UNSET = "(not set)"


@router.get("/compare", response_class=HTMLResponse)
def compare_models(request: Request, model: list[str] = Query(default=[])):
    s = request.app.state.studio
    entries = {e.path: e for e in find_models(s.data_dir)}
    picked = list(dict.fromkeys(m.strip("/") for m in model))
    unknown = [m for m in picked if m not in entries]
    if unknown or len(picked) < 2:
        why = (f"no registered model {', '.join(f'<code>{escape(m)}</code>' for m in unknown)}" if unknown else
               f"pick two or more models to compare ({len(picked)} picked)")
        return HTMLResponse(studio_page("Compare", f'<h1>Compare models</h1><p class="error" id="compare-error">{why}'
                                        '</p><p><a href="/models">Back to the models</a></p>', "/models"), 400)
    chosen = [entries[m] for m in picked]
    everything = list(entries.values())
    head = "".join(f'<th><a href="/models/{escape(e.path)}">{escape(e.path)}</a></th>' for e in chosen)
    chains = "".join(f"<td>{' ─▶ '.join(f'<code>{escape(step)}</code>' for step in lineage(s.data_dir, e, everything))}"
                     "</td>" for e in chosen)
    body = (f"<h1>Compare {len(chosen)} models</h1><table id=compare-lineage><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody><tr><th>lineage</th>{chains}</tr></tbody></table>"
            f"<h2>Recipe: the fields that differ</h2>{recipe_differences(s.data_dir, chosen, head)}"
            f"<h2>Measured</h2>{figures_table(s.data_dir, chosen, everything, head)}"
            f"<h2>Eval tables from the model cards</h2>{cards_side_by_side(s.data_dir, chosen)}")
    return studio_page("Compare", body, "/models")


def flat_recipe(data_dir, entry) -> dict[str, str]:
    """The model's recipe.yaml as dotted field names and their values: what made it, then every field."""
    try:
        recipe = yaml.load((data_dir / entry.path / "recipe.yaml").read_text(), Loader=YAML_LOADER) or {}
    except (OSError, yaml.YAMLError) as e:
        return {"recipe.yaml": f"unreadable: {e}"}
    flat = {"made by": entry.kind}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    walk("", recipe.get(entry.kind) if isinstance(recipe.get(entry.kind), dict) else recipe)
    return flat


def recipe_differences(data_dir, chosen, head: str) -> str:
    recipes = [flat_recipe(data_dir, e) for e in chosen]
    names = list(dict.fromkeys(k for r in recipes for k in r))
    differ = [k for k in names if len({r.get(k, UNSET) for r in recipes}) > 1]
    rows = "".join(f"<tr><th><code>{escape(k)}</code></th>"
                   + "".join(f"<td>{escape(r.get(k, UNSET))}</td>" for r in recipes) + "</tr>" for k in differ)
    same = len(names) - len(differ)
    note = f'<p class=meta id="recipe-same">{same} field{"" if same == 1 else "s"} the same in every recipe, not shown.</p>'
    if not differ:
        return f'<p id="recipe-diff">The recipes are the same.</p>{note}'
    return f'<table id="recipe-diff"><thead><tr><th>field</th>{head}</tr></thead><tbody>{rows}</tbody></table>{note}'


def figures_table(data_dir, chosen, everything, head: str) -> str:
    """Size, speed and every quality figure any of them has; the best of each row in bold, "not measured" where
    a model has none."""
    measured = gather(data_dir, everything)
    rows = [("size on disk (MiB)", [e.size_bytes / 2**20 for e in chosen], True),
            ("decode tokens/s (compare)", [measured[e.path].speed for e in chosen], False)]
    names = list(dict.fromkeys(k for e in chosen for k in measured[e.path].metrics))
    rows += [(k, [measured[e.path].metrics.get(k) for e in chosen], lower_is_better(k)) for k in names]
    html = ""
    for name, values, lower in rows:
        known = [v for v in values if v is not None]
        best = (min(known) if lower else max(known)) if len(known) > 1 else None
        cells = "".join("<td class=meta>not measured</td>" if v is None else
                        f"<td>{'<b>' if v == best else ''}{v:,.4g}{'</b>' if v == best else ''}</td>" for v in values)
        html += f"<tr><th>{escape(name)}</th>{cells}</tr>"
    return (f'<table id="compare-figures"><thead><tr><th>figure</th>{head}</tr></thead><tbody>{html}</tbody></table>'
            "<p class=meta>Bold: the best of a row (smaller, faster, lower loss, higher score).</p>")


def cards_side_by_side(data_dir, chosen) -> str:
    columns = []
    for e in chosen:
        card = data_dir / e.path / "README.md"
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
        start = text.find(BEGIN_LINE)
        if start < 0:
            inner = "<p class=meta>No eval table in its card.</p>"
        else:
            section = text[text.index("\n", start) + 1:] if "\n" in text[start:] else ""
            inner = card_html(section.split(END, 1)[0])
        columns.append(f'<div class="eval-card" data-model="{escape(e.path)}"><h3>{escape(e.path)}</h3>{inner}</div>')
    return f'<div class="charts" id="compare-cards">{"".join(columns)}</div>'
