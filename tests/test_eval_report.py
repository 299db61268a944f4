"""report.html of `seedbed eval` (valid, offline, every example, model text escaped) and the eval table in a
Seedbed model's card (replaced by the next eval, never duplicated; other directories untouched)."""

from __future__ import annotations

import re

import html5lib
import pytest
from conftest import qa_records, write_jsonl

import seedbed.evaluate.run as run
from seedbed.evaluate import evaluate
from seedbed.evaluate.card import BEGIN_LINE, END, is_seedbed_card, replace_section
from seedbed.evaluate.report import Answer, Example, Section, render_report
from seedbed.inference import load
from seedbed.inference.stops import TextTracker
from seedbed.recipe import EvalRecipe

HOSTILE = '<script>alert("x")</script></pre><img src=x onerror=alert(1)> & 3 < 4'


class Parrot:
    """A backend whose model answers every question with hostile markup and a calculator annotation."""

    max_batch = 8

    def __init__(self, path):
        inner = load(str(path))
        self.name, self.tokenizer, self.max_context = "parrot", inner.tokenizer, inner.max_context

    def decode(self, batch, admit=None):
        eos = self.tokenizer.eos_token_id
        for request in batch:
            written = self.tokenizer.decode(request.prompt_ids).rpartition("<|assistant|>\n")[2]
            text = (HOSTILE + " 2+2 = <<2+2=5>>") if not written else "4\n#### 4"
            tracker = TextTracker(self.tokenizer, {eos}, request.stop, request.stop_when)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
            for i, token in enumerate(ids):
                piece, finish = tracker.push(token, at_limit=i + 1 >= request.max_tokens)
                request.completion_tokens += 1
                request.emit(piece)
                if finish:
                    request.end(finish)
                    break

    def heldout_loss(self, examples, max_length=1024, batch_size=8):
        return {"loss": 1.5, "perplexity": 4.48, "tokens": 10}


def parse_strictly(page: str):
    """The page as a browser's HTML5 parser reads it; any parse error fails."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)


@pytest.fixture
def questions(tmp_path):
    records = [*qa_records(3), {"question": "Is 3 < 4? <b>bold</b>", "answer": "#### 4"}]
    return write_jsonl(tmp_path / "heldout.jsonl", records), records


def test_report_has_every_example_escaped_and_parses(tiny_model, questions, tmp_path, monkeypatch):
    heldout, records = questions
    monkeypatch.setattr(run, "load", lambda *args, **kwargs: Parrot(tiny_model))
    out = tmp_path / "eval"
    result = evaluate(EvalRecipe(models=[f"p={tiny_model}"], data=[str(heldout)], shots=[0], tools=["calculator"],
                                 max_new_tokens=200, out=str(out), quiet=True, model_card=False))
    page = (out / "report.html").read_text()
    tree = parse_strictly(page)

    assert "<script" not in page and "<img" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing fetched: offline
    examples = tree.findall(".//details")
    assert len(examples) == len(records) == result.n_questions
    text = "".join(tree.itertext())
    for record in records:
        assert record["question"] in text and record["answer"] in text
    assert text.count(HOSTILE) == 2 * len(records)  # each condition's answer, shown as text, not markup
    assert text.count("<<2+2=5>>") == len(records)  # the model's own value, in the plain answers
    # the calculator's value, in the +calculator answers and listed as their tool call
    assert text.count("<<2+2=4>>") == 2 * len(records) and text.count("calculator: <<2+2=4>>") == len(records)
    assert "finish reason: stop" in text and "p +calculator (0-shot)" in text
    rows = tree.findall(".//table/tbody/tr")
    assert [r.find("td").text for r in rows] == ["p", "p +calculator"]
    # one ✓/✗ mark per condition in each example's summary: the +calculator answer ends `#### 4`, right here
    marks = [[m.text for m in e.find("summary").find("span").findall("span")] for e in examples]
    assert marks[3] == ["✗", "✓"]


def test_sections_plug_in_and_unscored_answers_are_marked():
    judged = Section("Judged A/B", "a judge picked the better answer", ["pair", "wins"], [["a vs b", "3"]],
                     [Example("Write a haiku", "(none)", [Answer("a", "Leaves <fall>", None, {"judge": "a: <better>"})])])
    scores = Section("Scores", "exact match", ["condition", "accuracy"], [["a", "50.0%"]])
    page = render_report("Evaluation & more", [scores, judged])
    tree = parse_strictly(page)
    assert [h.text for h in tree.findall(".//h2")] == ["Scores", "Judged A/B"]
    assert "judge: a: <better>" in "".join(tree.itertext()) and "&lt;better&gt;" in page
    assert "unscored" in page and len(tree.findall(".//details")) == 1


# -- the model card -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_model):
    """A Seedbed model directory with the card `seedbed finetune` writes (two steps on the tiny model)."""
    from seedbed.recipe import FinetuneRecipe
    from seedbed.train.finetune import finetune

    tmp = tmp_path_factory.mktemp("card")
    data = write_jsonl(tmp / "d.jsonl", qa_records(16))
    finetune(FinetuneRecipe(base=str(tiny_model), data=[str(data)], out=str(tmp / "m"), method="full", max_steps=2,
                            batch_size=4, warmup=0, val_fraction=0, quiet=True, save_steps=1000))
    return tmp / "m"


def test_eval_table_goes_into_the_card_once_and_is_replaced(tiny_model, tuned, questions, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from seedbed.cli import app

    heldout, _ = questions
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "README.md").write_text("---\ntags: [other]\n---\n# Someone else's model\n")
    card = tuned / "README.md"
    before = card.read_text()
    assert is_seedbed_card(before)
    monkeypatch.setattr(run, "load", lambda *args, **kwargs: Parrot(tiny_model))
    args = ["eval", "--models", f"tuned={tuned}", "--models", f"other={foreign}", "--models", f"plain={tiny_model}",
            "--data", str(heldout), "--shots", "0", "--max-new-tokens", "200", "--quiet"]

    first = CliRunner().invoke(app, [*args, "--limit", "2"], env={"COLUMNS": "300"})
    assert first.exit_code == 0, first.output
    assert f"Model card updated: the table is in {card}" in first.output and first.output.count("card updated") == 1
    once = card.read_text()
    assert once.startswith(before.rstrip("\n")) and once.count(BEGIN_LINE) == 1 and once.count(END) == 1
    assert "2 held-out questions" in once and "This model's rows: tuned." in once and "| other | " in once

    second = CliRunner().invoke(app, [*args, "--tools", "calculator"], env={"COLUMNS": "300"})
    assert second.exit_code == 0, second.output
    twice = card.read_text()
    assert twice.count(BEGIN_LINE) == 1 and twice.count(END) == 1 and twice.count("## Evaluation") == 1
    assert "4 held-out questions" in twice and "2 held-out questions" not in twice  # replaced, not added to
    assert "This model's rows: tuned, tuned +calculator." in twice and twice.startswith(before.rstrip("\n"))
    assert (foreign / "README.md").read_text() == "---\ntags: [other]\n---\n# Someone else's model\n"
    assert not (tiny_model / "README.md").exists()


def test_card_section_kept_in_place_with_text_after_it():
    card = "---\ntags: [seedbed]\n---\n# Card\n"
    once = replace_section(card, "## Evaluation\n\nold")
    edited = once + "\n## Notes\n\nmine\n"  # the owner wrote on after the section
    again = replace_section(edited, "## Evaluation\n\nnew")
    assert again.count(BEGIN_LINE) == 1 and "old" not in again and "new" in again
    assert again.endswith("## Notes\n\nmine\n") and again.index("new") < again.index("## Notes")
    assert re.search(r"# Card\n\n<!-- seedbed eval: begin", again)
