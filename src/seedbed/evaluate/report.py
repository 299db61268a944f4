"""report.html of `seedbed eval`: the results tables and every example, drilled down, in one offline page.

The page is a list of sections; each is a title, a note on how it was scored, a table (one row per condition)
and its examples: the prompt, the reference and each condition's answer, whether it is right and any details
(finish reason, tool calls, a judge's verdict...). Each kind of result (the task's scores, judged A/B
comparisons, likelihood multiple choice) builds its own `Section`; `render_report` draws any list of them.
Every piece of text is escaped here: prompts and answers are user data and model output, and may hold markup.

>>> right = Answer("tuned", "#### 5", correct=True, details={"finish reason": "stop"})
>>> section = Section("GSM8K", "exact match", ["condition", "accuracy"], [["tuned", "100.0%"]],
...                   [Example("What is 2 plus 3? <b>", "#### 5", [right])])
>>> page = render_report("Evaluation", [section])
>>> "What is 2 plus 3? &lt;b&gt;" in page and "<b>" not in page
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from seedbed.html_page import page, table

# On top of the house style: one block per answer, green or red by whether it is right.
CSS = """
details.q{border:1px solid #e4e7eb;border-radius:6px;margin:6px 0;padding:4px 10px}
details.q>summary{cursor:pointer;font-size:13.5px}details.q h4{margin:10px 0 2px;font-size:13.5px}
details.q pre{margin:2px 0 6px;padding:8px 10px;white-space:pre-wrap;word-break:break-word;color:#1f2933}
.marks{float:right;font:14px ui-monospace,Menlo,monospace;letter-spacing:3px}
.right{color:#1e7b34}.wrong{color:#c62828}.unscored{color:#616e7c}
.answer{border-left:3px solid #b8c2cc;padding:2px 10px;margin:8px 0}.answer.right{border-color:#1e7b34}
.answer.wrong{border-color:#c62828}.answer h4{margin:0}.answer .meta{margin:0}
"""
PREVIEW = 110  # characters of a prompt shown in an example's one-line summary


@dataclass
class Answer:
    """One condition's answer to one example: right (True), wrong (False) or not scored (None), and details shown
    as `label: value` lines (finish reason, tool calls, a judgment...)."""

    condition: str
    text: str
    correct: bool | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class Example:
    prompt: str
    reference: str
    answers: list[Answer]


@dataclass
class Section:
    """One kind of result: its table (plain-text cells) and the examples behind it."""

    title: str
    note: str  # how it was measured and scored, in a sentence or two
    headers: list[str]
    rows: list[list[str]]
    examples: list[Example] = field(default_factory=list)


def render_report(title: str, sections: list[Section], meta: str = "") -> str:
    """The whole report.html: `title`, a `meta` line, then each section's table and examples."""
    body = f"<h1>{escape(title)}</h1>" + (f'<p class="meta">{escape(meta)}</p>' if meta else "")
    body += "".join(_section(s, i) for i, s in enumerate(sections))
    return page(title, body, CSS)


def _section(section: Section, index: int) -> str:
    examples = "".join(_example(e, f"s{index}-e{i}") for i, e in enumerate(section.examples))
    return (f"<section><h2>{escape(section.title)}</h2><p class=\"meta\">{escape(section.note)}</p>"
            + table(section.headers, section.rows)
            + (f"<h3>Every example ({len(section.examples)})</h3>{examples}" if examples else "")
            + "</section>")


def _mark(correct: bool | None) -> tuple[str, str]:
    """(css class, sign) for an answer that is right, wrong or not scored."""
    return {True: ("right", "✓"), False: ("wrong", "✗"), None: ("unscored", "·")}[correct]


def _example(example: Example, anchor: str) -> str:
    marks = "".join(f'<span class="{_mark(a.correct)[0]}" title="{escape(a.condition)}">{_mark(a.correct)[1]}</span>'
                    for a in example.answers)
    preview = " ".join(example.prompt.split())
    preview = preview if len(preview) <= PREVIEW else preview[:PREVIEW] + "…"
    answers = "".join(
        f'<div class="answer {_mark(a.correct)[0]}"><h4>{_mark(a.correct)[1]} {escape(a.condition)}</h4>'
        + "".join(f'<p class="meta">{escape(k)}: {escape(v)}</p>' for k, v in a.details.items())
        + f"<pre>{escape(a.text)}</pre></div>"
        for a in example.answers)
    return (f'<details class="q" id="{anchor}"><summary><span class="marks">{marks}</span>{escape(preview)}</summary>'
            f"<h4>Prompt</h4><pre>{escape(example.prompt)}</pre><h4>Reference</h4><pre>{escape(example.reference)}"
            f"</pre>{answers}</details>")
