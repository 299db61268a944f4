"""Instruction-data readers: every shape and file format becomes canonical examples, and every malformed record
fails naming its file, line and field."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import seedbed
import seedbed.errors
from seedbed.data import readers
from seedbed.data.mapping import apply_mapping
from seedbed.data.readers import DataError, Problem, read_examples, resolve_data_path
from seedbed.data.shapes import examples_from_record
from seedbed.recipe import FieldMapping, RecipeError, load_recipe

from conftest import write_jsonl

# Real records, copied from openai/grade-school-math train.jsonl and the self-instruct seed tasks.
GSM8K = {
    "question": "What is fifteen more than a quarter of 48?",
    "answer": "A quarter of 48 is 48/4=<<48/4=12>>12.\nThe number is 12+15=<<12+15=27>>27.\n#### 27",
}
SEED_TASK = {
    "id": "seed_task_25", "name": "perfect_numbers", "instruction": "Find the four smallest perfect numbers.",
    "instances": [{"input": "", "output": "6, 28, 496, and 8128"}], "is_classification": False,
}


def user_assistant(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def read_one(path: Path):
    data = read_examples([path])
    assert len(data.examples) == 1
    return data.examples[0]


SHAPES = {
    "openai_chat": (
        {"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hello!", "name": "bot"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ]},
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\nthere"},
         {"role": "assistant", "content": "Hello!"}, {"role": "assistant", "content": ""},
         {"role": "tool", "content": "42"}],
    ),
    "sharegpt": (
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                           {"from": "gpt", "value": "Hello!"}, {"from": "user", "value": "Bye"},
                           {"from": "assistant", "value": "Bye!"}]},
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
         {"role": "assistant", "content": "Bye!"}],
    ),
    "dolly": (
        {"instruction": "Who wrote it?", "context": "Dune is by Frank Herbert.", "response": "Frank Herbert.",
         "category": "closed_qa"},
        user_assistant("Who wrote it?\n\nDune is by Frank Herbert.", "Frank Herbert."),
    ),
    "alpaca": (
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        user_assistant("Add the numbers.\n\n2 and 3", "5"),
    ),
    "self_instruct": (SEED_TASK, user_assistant("Find the four smallest perfect numbers.", "6, 28, 496, and 8128")),
    "gsm8k": (GSM8K, user_assistant(GSM8K["question"], GSM8K["answer"])),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_becomes_messages(tmp_path, shape):
    record, messages = SHAPES[shape]
    path = write_jsonl(tmp_path / "d.jsonl", [record])
    data = read_examples([path])
    assert [e.messages for e in data.examples] == [messages]
    assert data.files[0].shapes == {shape: 1}
    example = data.examples[0]
    assert example.is_chat and example.source == f"{path}:1"
    assert example.category == ("closed_qa" if shape == "dolly" else None)


def test_ids_come_from_the_record_or_its_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GSM8K, {**GSM8K, "id": 7}, {**GSM8K, "id": "q-3"}, SEED_TASK])
    assert [e.id for e in read_examples([path]).examples] == ["d.jsonl:1", "7", "q-3", "seed_task_25#0"]


def test_plain_text_stays_raw_and_optional_fields_may_be_empty(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"text": "  Once upon a time.\n"},
        {"instruction": "Say hi.", "input": "", "output": "Hi"},
        {"instruction": "Say hi.", "input": float("nan"), "output": "Hi"},  # pandas writes NaN for a missing cell
        {"instruction": "Say hi.", "context": None, "response": "Hi", "category": ""},
    ])
    text, alpaca, alpaca_nan, dolly = read_examples([path]).examples
    assert (text.text, text.messages, text.is_chat) == ("  Once upon a time.\n", [], False)
    assert alpaca.messages == alpaca_nan.messages == dolly.messages == user_assistant("Say hi.", "Hi")
    assert dolly.category is None


def test_self_instruct_gives_one_example_per_instance_and_summary_counts_both(tmp_path):
    task = {**SEED_TASK, "instances": [{"input": "", "output": "6, 28, 496, and 8128"},
                                       {"input": "Only two.", "output": "6 and 28"}]}
    path = write_jsonl(tmp_path / "tasks.jsonl", [task, GSM8K])
    data = read_examples([str(path)])
    assert [e.id for e in data.examples] == ["seed_task_25#0", "seed_task_25#1", "tasks.jsonl:2"]
    assert data.examples[1].messages[0]["content"] == "Find the four smallest perfect numbers.\n\nOnly two."
    [summary] = data.files
    assert (summary.path, summary.records, summary.examples) == (str(path), 2, 3)
    assert summary.shapes == {"self_instruct": 1, "gsm8k": 1}
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_blank_jsonl_lines_are_not_records_but_keep_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GSM8K) + "\n\n   \n" + json.dumps(GSM8K) + "\n")
    data = read_examples([path])
    assert data.files[0].records == 2 and data.examples[1].source == f"{path}:4"


# ---- file formats --------------------------------------------------------------------------------------------

FLAT = [
    GSM8K,
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Who wrote it?", "context": "", "response": "Frank Herbert.", "category": "open_qa"},
]


def write_csv(path: Path, records: list[dict], opener=open) -> Path:
    columns = list(dict.fromkeys(k for r in records for k in r))
    with opener(path, "wt", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(records)
    return path


WRITERS = {
    "d.jsonl": lambda p, rs: write_jsonl(p, rs),
    "d.jsonl.gz": lambda p, rs: p.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rs).encode())),
    "d.json": lambda p, rs: p.write_text(json.dumps(rs, indent=2)),
    "d_wrapped.json": lambda p, rs: p.write_text(json.dumps({"version": 1, "data": rs}, indent=2)),
    "d.json.gz": lambda p, rs: p.write_bytes(gzip.compress(json.dumps(rs).encode())),
    "d.csv": write_csv,
    "d.csv.gz": lambda p, rs: write_csv(p, rs, gzip.open),
    "d.parquet": lambda p, rs: write_parquet(p, rs),
}


def write_parquet(path: Path, records: list[dict]) -> Path:
    columns = dict.fromkeys(k for r in records for k in r)  # every record's keys, not just the first's
    pq.write_table(pa.table({k: [r.get(k) for r in records] for k in columns}), path)
    return path


@pytest.mark.parametrize("name", WRITERS)
def test_every_format_reads_the_same_examples(tmp_path, name):
    path = tmp_path / name
    WRITERS[name](path, FLAT)
    data = read_examples([path])
    expected = read_examples([write_jsonl(tmp_path / "reference.jsonl", FLAT)]).examples
    assert [(e.messages, e.category) for e in data.examples] == [(e.messages, e.category) for e in expected]
    assert data.files[0].shapes == {"gsm8k": 1, "alpaca": 1, "dolly": 1}
    assert data.files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_lines_are_where_each_record_starts(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(FLAT, indent=2))  # GSM8K starts on line 2, alpaca on 6, dolly on 11
    assert [e.source for e in read_examples([path]).examples] == [f"{path}:{n}" for n in (2, 6, 11)]


def test_a_json_file_may_hold_a_single_record(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(SHAPES["openai_chat"][0], indent=2))
    assert read_one(path).messages == SHAPES["openai_chat"][1]


def test_json_lines_named_json_get_a_hint(tmp_path):
    path = write_jsonl(tmp_path / "d.json", [GSM8K, GSM8K])
    with pytest.raises(DataError) as error:
        read_examples([path])
    message = str(error.value)
    assert message.startswith(f"{path}:2: field '-': invalid JSON: extra data") and "name it .jsonl" in message


def test_csv_lines_count_cells_that_span_lines(tmp_path):
    path = write_csv(tmp_path / "d.csv", FLAT)  # the GSM8K answer spans lines 2-4
    assert [e.source for e in read_examples([path]).examples] == [f"{path}:{n}" for n in (2, 5, 6)]
    assert read_examples([path]).examples[0].messages[1]["content"] == GSM8K["answer"]


def test_parquet_nulls_count_as_empty_and_rows_are_numbered(tmp_path):
    path = tmp_path / "d.parquet"
    write_parquet(path, [{"instruction": "Say hi.", "input": None, "output": "Hi", "id": None}] * 2)
    data = read_examples([path])
    assert [e.messages for e in data.examples] == [user_assistant("Say hi.", "Hi")] * 2
    assert [e.id for e in data.examples] == ["d.parquet:1", "d.parquet:2"]


def test_a_directory_is_read_recursively_in_sorted_order(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [GSM8K])
    (tmp_path / "a" / "deeper").mkdir(parents=True)
    write_jsonl(tmp_path / "a" / "deeper" / "z.jsonl", [GSM8K])
    (tmp_path / "a" / "one.json").write_text(json.dumps([SEED_TASK]))
    (tmp_path / "README.md").write_text("not data")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_jsonl(tmp_path / ".ipynb_checkpoints" / "b-checkpoint.jsonl", [GSM8K])
    data = read_examples([tmp_path])
    assert [Path(f.path).relative_to(tmp_path).as_posix() for f in data.files] == [
        "a/deeper/z.jsonl", "a/one.json", "b.jsonl"]
    assert len(data.examples) == 3


def test_packaged_paths_resolve_inside_the_package(tmp_path, monkeypatch):
    package_dir = Path(seedbed.__file__).parent
    assert resolve_data_path("seedbed:data/x.jsonl") == package_dir / "assets" / "data" / "x.jsonl"
    monkeypatch.setattr(readers, "files", lambda package: tmp_path)  # a package whose assets we control
    (tmp_path / "assets" / "data").mkdir(parents=True)
    write_jsonl(tmp_path / "assets" / "data" / "x.jsonl", [GSM8K])
    assert read_examples(["seedbed:data/x.jsonl"]).examples[0].messages[1]["content"] == GSM8K["answer"]


def test_other_paths_expand_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_path("~/d.jsonl") == tmp_path / "d.jsonl"
    assert resolve_data_path(Path("rel/d.jsonl")) == Path("rel/d.jsonl")


# ---- malformed input ------------------------------------------------------------------------------------------

BAD = {
    "missing field": ({"question": "What is one plus one?"}, "answer", "missing"),
    "empty field": ({**GSM8K, "answer": "  \n"}, "answer", "empty"),
    "number for text": ({**GSM8K, "answer": 27}, "answer", "expected text, got a number"),
    "list for instruction": ({"instruction": ["Add"], "output": "5"}, "instruction", "got a list"),
    "bad role": ({"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hey"}]},
                 "messages[1].role", "'bot'"),
    "no assistant": ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]},
                     "messages", "no assistant message"),
    "image part": ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]},
                                 {"role": "assistant", "content": "A cat."}]},
                   "messages[0].content[0]", "'image_url'"),
    "bad speaker": ({"conversations": [{"from": "bing", "value": "Hi"}]}, "conversations[0].from", "'bing'"),
    "bad instance": ({**SEED_TASK, "instances": [{"input": "", "output": "6"}, {"input": "x"}]},
                     "instances[1].output", "missing"),
    "bad id": ({**GSM8K, "id": [1]}, "id", "expected text or an integer"),
    "unknown shape": ({"prompt": "Hi", "completion": "Hello"}, "-", "no known record shape"),
    "not an object": (["Hi", "Hello"], "-", "expected a record"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_record_on_line_3_is_named_with_its_field(tmp_path, case):
    record, field, message = BAD[case]
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GSM8K) + "\n\n" + json.dumps(record) + "\n" + json.dumps(GSM8K) + "\n")
    with pytest.raises(DataError) as error:
        read_examples([path])
    [problem] = error.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 3, field)
    assert message in problem.message
    assert str(error.value).startswith(f"{path}:3: field '{field}': ")


def test_invalid_json_line_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GSM8K) + "\n" + json.dumps(GSM8K) + '\n{"question": "Hi", "answer": \n')
    with pytest.raises(DataError) as error:
        read_examples([path])
    assert str(error.value).startswith(f"{path}:3: field '-': invalid JSON: Expecting value")


def test_bad_record_in_a_pretty_printed_json_array_names_its_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": [GSM8K, {"question": "Hi"}]}, indent=2))  # the 2nd record starts on line 7
    with pytest.raises(DataError) as error:
        read_examples([path])
    assert str(error.value) == f"{path}:7: field 'answer': missing (a gsm8k record needs question and answer)"


def test_invalid_json_file_names_the_line_of_the_error(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": "b",}\n]')
    with pytest.raises(DataError) as error:
        read_examples([path])
    assert str(error.value).startswith(f"{path}:3: field '-': invalid JSON")


def test_bad_csv_row_names_the_line_it_starts_on(tmp_path):
    path = write_csv(tmp_path / "d.csv", [GSM8K, {"question": "Hi", "answer": ""}])  # row 1 spans lines 2-4
    with pytest.raises(DataError) as error:
        read_examples([path])
    assert str(error.value) == f"{path}:5: field 'answer': empty"


def test_bad_parquet_row_names_its_row_number(tmp_path):
    path = tmp_path / "d.parquet"
    write_parquet(path, [GSM8K, GSM8K, {"question": "Hi", "answer": None}])
    with pytest.raises(DataError) as error:
        read_examples([path])
    assert [(p.line, p.field) for p in error.value.problems] == [(3, "answer")]


def test_missing_paths_and_unsupported_files_are_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as error:
        read_examples([tmp_path / "nope.jsonl", tmp_path / "notes.txt", tmp_path / "empty"])
    assert [(Path(p.file).name, p.line, p.field) for p in error.value.problems] == [
        ("nope.jsonl", 0, "-"), ("notes.txt", 0, "-"), ("empty", 0, "-")]
    assert "unsupported file type" in str(error.value)


def test_every_problem_in_every_file_is_reported_at_once(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [GSM8K, {"question": "Hi"}, GSM8K, {"text": 3}])
    second = tmp_path / "b.json"
    second.write_text(json.dumps([{"instruction": "Add.", "output": ""}]))
    with pytest.raises(DataError) as error:
        read_examples([first, second, tmp_path / "gone.csv"])
    assert error.value.problems == [
        Problem(str(first), 2, "answer", "missing (a gsm8k record needs question and answer)"),
        Problem(str(first), 4, "text", "expected text, got a number"),
        Problem(str(second), 1, "output", "empty"),
        Problem(str(tmp_path / "gone.csv"), 0, "-", f"no such file or directory ({tmp_path / 'gone.csv'})"),
    ]
    assert len(str(error.value).splitlines()) == 4


def test_a_long_list_of_problems_is_shortened(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "Hi"}] * 25)
    with pytest.raises(DataError) as error:
        read_examples([path])
    lines = str(error.value).splitlines()
    assert len(error.value.problems) == 25 and len(lines) == 21 and lines[-1] == "... and 5 more"
    assert lines[19].startswith(f"{path}:20: ")


# -- users' own fields: a recipe's mapping --------------------------------------------------------------------------

# Real records, copied from sonos/nlu-benchmark (SNIPS, CC0-1.0), flattened to {id, text, intent, slots}.
SNIPS = [
    {"id": "train-PlayMusic-1277", "text": "Play the top caleigh peters.", "intent": "PlayMusic",
     "slots": [{"name": "sort", "value": "top"}, {"name": "artist", "value": "caleigh peters"}]},
    {"id": "train-GetWeather-790", "text": "What's the weather in Andorra", "intent": "GetWeather",
     "slots": [{"name": "country", "value": "Andorra"}]},
    {"id": "train-BookRestaurant-202", "text": "Book spot for eight at bar that serves potée", "intent": "BookRestaurant",
     "slots": [{"name": "party_size_number", "value": "eight"}, {"name": "restaurant_type", "value": "bar"},
               {"name": "served_dish", "value": "potée"}]},
]
SNIPS_MAPPING = FieldMapping(prompt="Turn this request into JSON: {text}", response_json=["intent", "slots"])


def test_a_mapping_reads_snips_records_as_text_to_json_chats(tmp_path):
    path = write_jsonl(tmp_path / "snips.jsonl", SNIPS)
    data = read_examples([path], mapping=SNIPS_MAPPING)
    assert data.files[0].shapes == {"mapping": 3} and [e.id for e in data.examples] == [r["id"] for r in SNIPS]
    first = data.examples[0]
    assert first.messages == user_assistant(
        "Turn this request into JSON: Play the top caleigh peters.",
        '{"intent": "PlayMusic", "slots": [{"name": "sort", "value": "top"}, {"name": "artist", "value": "caleigh peters"}]}')
    assert json.loads(data.examples[2].reference()) == {"intent": "BookRestaurant", "slots": SNIPS[2]["slots"]}
    assert "potée" in data.examples[2].reference()  # written as text, not \u escapes
    assert first.source == f"{path}:1" and first.category is None
    # without the mapping the same records are plain text (their "text" field), which is why mappings exist
    assert read_examples([path]).files[0].shapes == {"text": 3}


def test_a_mapping_with_system_category_dotted_paths_and_a_response_template(tmp_path):
    records = [{"utterance": "Play some jazz", "label": {"intent": "PlayMusic", "score": 0.9}, "tags": ["music"]},
               {"utterance": "Rain tomorrow?", "label": {"intent": "GetWeather", "score": 1}, "tags": ["weather"]}]
    mapping = FieldMapping(system="Label the {tags.0} request.", prompt="{utterance} {{label?}}",
                           response="{label.intent} ({label.score})", category="label.intent")
    examples = read_examples([write_jsonl(tmp_path / "d.jsonl", records)], mapping).examples
    assert examples[0].messages == [{"role": "system", "content": "Label the music request."},
                                    *user_assistant("Play some jazz {label?}", "PlayMusic (0.9)")]
    assert examples[1].reference() == "GetWeather (1)" and [e.category for e in examples] == ["PlayMusic", "GetWeather"]
    assert [e.id for e in examples] == ["d.jsonl:1", "d.jsonl:2"]
    # an object or a list put into a template is written as JSON
    [example] = read_examples([write_jsonl(tmp_path / "e.jsonl", records[:1])],
                              FieldMapping(prompt="{utterance}", response="{tags}")).examples
    assert example.reference() == '["music"]'


def test_a_missing_field_is_named_with_file_line_and_field_for_every_bad_line(tmp_path):
    records = [SNIPS[0], {k: v for k, v in SNIPS[1].items() if k != "intent"}, SNIPS[2],
               {**SNIPS[0], "slots": None}, {**SNIPS[0], "text": "  "}, ["not", "a", "record"]]
    path = write_jsonl(tmp_path / "snips.jsonl", records)
    with pytest.raises(DataError) as error:
        read_examples([path], mapping=SNIPS_MAPPING)
    assert str(error.value).splitlines() == [
        f"{path}:2: field 'intent': missing",
        f"{path}:4: field 'slots': missing",
        f"{path}:5: field 'text': empty",
        f"{path}:6: field '-': expected a record (a JSON object), got a list",
    ]
    assert isinstance(error.value, seedbed.errors.SeedbedError)


def test_a_mapping_reads_csv_columns_and_names_an_empty_cell(tmp_path):
    rows = [{"utterance": "Play some jazz", "intent": "PlayMusic"}, {"utterance": "Rain tomorrow?", "intent": ""}]
    path = write_csv(tmp_path / "d.csv", rows)
    mapping = FieldMapping(prompt="Intent of: {utterance}", response="{intent}")
    with pytest.raises(DataError) as error:
        read_examples([path], mapping)
    assert str(error.value) == f"{path}:3: field 'intent': empty"
    assert read_examples([write_csv(tmp_path / "ok.csv", rows[:1])], mapping).examples[0].messages == user_assistant(
        "Intent of: Play some jazz", "PlayMusic")


def test_apply_mapping_gives_a_chat_record_any_reader_reads():
    mapped = apply_mapping(SNIPS[1], SNIPS_MAPPING.model_copy(update={"category": "intent"}), "snips.jsonl:2")
    assert mapped == {"id": "train-GetWeather-790", "category": "GetWeather", "messages": user_assistant(
        "Turn this request into JSON: What's the weather in Andorra",
        '{"intent": "GetWeather", "slots": [{"name": "country", "value": "Andorra"}]}')}
    shape, [example] = examples_from_record(mapped, "snips.jsonl:2", "data/snips.jsonl:2")
    assert (shape, example.id, example.category) == ("openai_chat", "train-GetWeather-790", "GetWeather")
    assert apply_mapping({"text": "Hi", "intent": "A", "slots": []}, SNIPS_MAPPING, "f.jsonl:9")["id"] == "f.jsonl:9"


@pytest.mark.parametrize("mapping, field, message", [
    ({"prompt": "Turn {text into JSON"}, "eval.mapping.prompt", "a stray '{'"),
    ({"prompt": "{}", "response": "{intent}"}, "eval.mapping.prompt", "an empty {}"),
    ({"prompt": "{text}"}, "eval.mapping", "give the answer as response"),
    ({"prompt": "{text}", "response": "{intent}", "response_json": ["intent"]}, "eval.mapping", "one of them"),
    ({"prompt": "{text}", "response_json": ["intent", "label.intent"]}, "eval.mapping", "share a key"),
    ({"prompt": "{text}", "response": "{intent}", "colour": "blue"}, "eval.mapping.colour", "Extra inputs"),
])
def test_a_bad_mapping_fails_naming_the_recipe_field(tmp_path, mapping, field, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"eval": {"mapping": mapping}}))
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert str(error.value).startswith(f"{path}: {field}: ") and message in str(error.value)


def test_mapping_fields_are_dotted_flags_on_every_verb_that_reads_data():
    from typer.testing import CliRunner

    from seedbed.cli import app

    for verb in (["finetune"], ["distill"], ["eval"], ["data", "prepare"]):
        help_text = CliRunner().invoke(app, [*verb, "--help"], env={"COLUMNS": "300"}).output
        for flag in ("--mapping.prompt", "--mapping.response ", "--mapping.response-json", "--mapping.system",
                     "--mapping.category"):
            assert flag in help_text, (verb, flag)


def test_finetune_and_distill_read_their_data_and_val_data_through_the_mapping(tmp_path):
    from seedbed.recipe import DistillRecipe, FinetuneRecipe
    from seedbed.train.trainer import read_splits

    train = write_jsonl(tmp_path / "train.jsonl", SNIPS[:2])
    val = write_jsonl(tmp_path / "val.jsonl", SNIPS[2:])
    for recipe in (FinetuneRecipe(data=[str(train)], val_data=[str(val)], mapping=SNIPS_MAPPING),
                   DistillRecipe(data=[str(train)], val_data=[str(val)], mapping=SNIPS_MAPPING)):
        data, train_examples, val_examples, _ = read_splits(recipe)
        assert data.files[0].shapes == {"mapping": 2}
        assert [e.messages[0]["content"] for e in train_examples + val_examples] == [
            f"Turn this request into JSON: {r['text']}" for r in SNIPS]


def test_default_ids_differ_for_files_of_the_same_name_in_different_folders(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.jsonl").write_text(json.dumps({"text": f"from {folder}"}) + "\n")
    examples = read_examples([tmp_path / "a" / "train.jsonl", tmp_path / "b" / "train.jsonl"]).examples
    assert [e.id for e in examples] == ["a/train.jsonl:1", "b/train.jsonl:1"]
    alone = read_examples([tmp_path / "a" / "train.jsonl"]).examples  # one file: its name, as before
    assert [e.id for e in alone] == ["train.jsonl:1"]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_deeply_nested_record_is_a_file_line_problem(tmp_path, suffix):
    deep = "[" * 100_000 + "]" * 100_000  # past the JSON decoder's recursion limit
    middling = {"text": "hi", "meta": json.loads("[" * 200 + "]" * 200)}  # parses, but later copies would recurse
    lines = [json.dumps({"text": "fine"}), '{"text": "x", "meta": ' + deep + "}", json.dumps(middling)]
    path = tmp_path / f"deep{suffix}"
    path.write_text("\n".join(lines) + "\n" if suffix == ".jsonl" else "[\n" + ",\n".join(lines) + "\n]\n")
    with pytest.raises(DataError) as error:
        read_examples([path])
    said = str(error.value)
    if suffix == ".jsonl":
        assert f"{path}:2: field '-': nested deeper than" in said and f"{path}:3: field '-': nested deeper" in said
    else:  # the whole array is one JSON value: where it starts is named
        assert f"{path}:1: field '-': nested deeper than" in said
