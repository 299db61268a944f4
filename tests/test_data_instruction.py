"""Curation that fits instruction data: quality rules by shape, mojibake repair, language on the whole record,
near-duplicates that look past a shared template, PII consistent across a record's fields, public names left
alone, and dropped records kept readable in dropped.jsonl.

The SNIPS records below are copied from SNIPS 2017 (sonos/nlu-benchmark, 2017-06-custom-intent-engines,
train_*_full.json; CC0-1.0), as flattened to {id, text, intent, slots}; the mojibake ("NiÃ±os") is the original's.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import write_jsonl

from seedbed.curate.config import (DedupConfig, LanguageConfig, NormaliseConfig, PIIConfig, QualityConfig,
                                   ToxicityConfig)
from seedbed.curate.normalise import normalise
from seedbed.curate.pii import PIIRedactor, Span, same_values_everywhere
from seedbed.curate.prepare import prepare
from seedbed.curate.quality import check_language, check_record, check_turns, clean_ends_are_normal, ending
from seedbed.curate.records import Turn, to_item
from seedbed.curate.toxicity import ToxicityScorer
from seedbed.recipe import DataRecipe

SNIPS = [
    {"id": "train-GetWeather-1853", "text": "What will the weather be in Kokhanok", "intent": "GetWeather", "slots": [{"name": "city", "value": "Kokhanok"}]},
    {"id": "train-GetWeather-18", "text": "What will the weather be in Federated States Of Micronesia at 00:17 am", "intent": "GetWeather", "slots": [{"name": "state", "value": "Federated States Of Micronesia"}, {"name": "timeRange", "value": "00:17 am"}]},
    {"id": "train-GetWeather-48", "text": "What will the weather be in Nationalpark Rila on Nov. 25?", "intent": "GetWeather", "slots": [{"name": "geographic_poi", "value": "Nationalpark Rila"}, {"name": "timeRange", "value": "Nov. 25"}]},
    {"id": "train-GetWeather-78", "text": "What will the weather be in Peru?", "intent": "GetWeather", "slots": [{"name": "country", "value": "Peru"}]},
    {"id": "train-GetWeather-79", "text": "What will the weather be in the current place 1 minute from now?", "intent": "GetWeather", "slots": [{"name": "current_location", "value": "current place"}, {"name": "timeRange", "value": "1 minute from now"}]},
    {"id": "train-GetWeather-132", "text": "What will the weather be in the Flight Park State Recreation Area?", "intent": "GetWeather", "slots": [{"name": "geographic_poi", "value": "Flight Park State Recreation Area"}]},
    {"id": "train-GetWeather-218", "text": "What will the weather be in Bayside on Sep. 21, 2034?", "intent": "GetWeather", "slots": [{"name": "city", "value": "Bayside"}, {"name": "timeRange", "value": "Sep. 21, 2034"}]},
    {"id": "train-GetWeather-230", "text": "What will the weather be in the current spot on 12/14/2023.", "intent": "GetWeather", "slots": [{"name": "current_location", "value": "current spot"}, {"name": "timeRange", "value": "12/14/2023"}]},
    {"id": "train-GetWeather-264", "text": "What will the weather be in Overton at 8 pm?", "intent": "GetWeather", "slots": [{"name": "city", "value": "Overton"}, {"name": "timeRange", "value": "8 pm"}]},
    {"id": "train-GetWeather-314", "text": "What will the weather be in Rutherfordton Rhode Island on September 22nd, 2017?", "intent": "GetWeather", "slots": [{"name": "city", "value": "Rutherfordton"}, {"name": "state", "value": "Rhode Island"}, {"name": "timeRange", "value": "September 22nd, 2017"}]},
    {"id": "train-GetWeather-415", "text": "What will the weather be in Meeres-Nationalpark Insel Bastimentos at twelve PM?", "intent": "GetWeather", "slots": [{"name": "geographic_poi", "value": "Meeres-Nationalpark Insel Bastimentos"}, {"name": "timeRange", "value": "twelve PM"}]},
    {"id": "train-GetWeather-442", "text": "What will the weather be in one minute in Tanzania", "intent": "GetWeather", "slots": [{"name": "timeRange", "value": "in one minute"}, {"name": "country", "value": "Tanzania"}]},
    {"id": "train-GetWeather-448", "text": "What will the weather be in Totowa Guernsey?", "intent": "GetWeather", "slots": [{"name": "city", "value": "Totowa"}, {"name": "country", "value": "Guernsey"}]},
    {"id": "train-AddToPlaylist-0", "text": "Add another song to the Cita Romántica playlist.", "intent": "AddToPlaylist", "slots": [{"name": "music_item", "value": "song"}, {"name": "playlist", "value": "Cita Romántica"}]},
    {"id": "train-AddToPlaylist-2", "text": "Add Live from Aragon Ballroom to Trapeo", "intent": "AddToPlaylist", "slots": [{"name": "entity_name", "value": "Live from Aragon Ballroom"}, {"name": "playlist", "value": "Trapeo"}]},
    {"id": "train-AddToPlaylist-4", "text": "Add track to my Digster Future Hits", "intent": "AddToPlaylist", "slots": [{"name": "music_item", "value": "track"}, {"name": "playlist_owner", "value": "my"}, {"name": "playlist", "value": "Digster Future Hits"}]},
    {"id": "train-PlayMusic-390", "text": "Play new music from Liang Wern Fook", "intent": "PlayMusic", "slots": [{"name": "sort", "value": "new"}, {"name": "artist", "value": "Liang Wern Fook"}]},
    {"id": "train-PlayMusic-178", "text": "Play the playlist, A Mis NiÃ±os de 30.", "intent": "PlayMusic", "slots": [{"name": "playlist", "value": "A Mis NiÃ±os de 30"}]},
    {"id": "train-PlayMusic-3", "text": "play the MÃºsica Da SÃ©rie De Filmes O Hobbit album by Alex Otaola", "intent": "PlayMusic", "slots": [{"name": "album", "value": "MÃºsica Da SÃ©rie De Filmes O Hobbit"}, {"name": "music_item", "value": "album"}, {"name": "artist", "value": "Alex Otaola"}]},
    {"id": "train-RateBook-1", "text": "Rate The Fall-Down Artist 5 stars.", "intent": "RateBook", "slots": [{"name": "object_name", "value": "The Fall-Down Artist"}, {"name": "rating_value", "value": "5"}, {"name": "rating_unit", "value": "stars"}]},
    {"id": "train-RateBook-2", "text": "Rate the current novel one points", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "novel"}, {"name": "rating_value", "value": "one"}, {"name": "rating_unit", "value": "points"}]},
    {"id": "train-SearchCreativeWork-1", "text": "find a book called The Mad Magician", "intent": "SearchCreativeWork", "slots": [{"name": "object_type", "value": "book"}, {"name": "object_name", "value": "The Mad Magician"}]},
    {"id": "train-SearchCreativeWork-2", "text": "find the picture Louder Than Bombs", "intent": "SearchCreativeWork", "slots": [{"name": "object_type", "value": "picture"}, {"name": "object_name", "value": "Louder Than Bombs"}]},
    {"id": "train-SearchScreeningEvent-1", "text": "I want to get the movie schedule", "intent": "SearchScreeningEvent", "slots": [{"name": "object_type", "value": "movie schedule"}]},
    {"id": "train-SearchScreeningEvent-2", "text": "Show me movie time for I Am Sorry at my movie house", "intent": "SearchScreeningEvent", "slots": [{"name": "movie_name", "value": "I Am Sorry"}, {"name": "object_location_type", "value": "movie house"}]},
    {"id": "train-BookRestaurant-1", "text": "Book a table at T-Rex distant from Halsey St.", "intent": "BookRestaurant", "slots": [{"name": "restaurant_name", "value": "T-Rex"}, {"name": "spatial_relation", "value": "distant"}, {"name": "poi", "value": "Halsey St"}]},
    {"id": "train-BookRestaurant-2", "text": "I'd like to eat at a taverna that serves chili con carne for a party of 10", "intent": "BookRestaurant", "slots": [{"name": "restaurant_type", "value": "taverna"}, {"name": "served_dish", "value": "chili con carne"}, {"name": "party_size_number", "value": "10"}]},
    {"id": "train-BookRestaurant-633", "text": "Book a restaurant for 9 people.", "intent": "BookRestaurant", "slots": [{"name": "restaurant_type", "value": "restaurant"}, {"name": "party_size_number", "value": "9"}]},
    {"id": "train-BookRestaurant-1583", "text": "Book a restaurant for 9 people.", "intent": "BookRestaurant", "slots": [{"name": "restaurant_type", "value": "restaurant"}, {"name": "party_size_number", "value": "9"}]},
]
TEMPLATE = ("You are the language-understanding component of a voice assistant. Read the user's request below and "
            "turn it into a JSON object with exactly two keys: \"intent\", what the user wants, and \"slots\", a list "
            "with one object for each part of the request that fills a slot, holding the slot's \"name\" and its "
            "\"value\" copied exactly as the user wrote it. Answer with the JSON object only.\n\nRequest: ")


# Pairs of real SNIPS requests (same source and licence as SNIPS above) that differ by one trailing word, and in
# the answer by a slot ("points" is a rating_unit) or not at all. Among all 13,784 SNIPS requests behind the
# template, 128-permutation MinHash estimated every pair's requests >= 0.9 alike, though 5 shingles against 6 can
# be at most 0.83 alike (test_data_stages.py has the bound on its own; here, the pairs end to end).
ONE_WORD_APART = [
    {"id": "train-AddToPlaylist-861", "text": "add track to This Is Zezé Di Camargo & Luciano playlist", "intent": "AddToPlaylist", "slots": [{"name": "music_item", "value": "track"}, {"name": "playlist", "value": "This Is Zezé Di Camargo & Luciano"}]},
    {"id": "train-AddToPlaylist-1721", "text": "add track to This Is Zezé Di Camargo & Luciano", "intent": "AddToPlaylist", "slots": [{"name": "music_item", "value": "track"}, {"name": "playlist", "value": "This Is Zezé Di Camargo & Luciano"}]},
    {"id": "train-AddToPlaylist-1190", "text": "Add Welcome to the Cruel World to my Reggae Classics playlist", "intent": "AddToPlaylist", "slots": [{"name": "entity_name", "value": "Welcome to the Cruel World"}, {"name": "playlist_owner", "value": "my"}, {"name": "playlist", "value": "Reggae Classics"}]},
    {"id": "train-AddToPlaylist-1227", "text": "Add Welcome to the Cruel World to my Reggae Classics", "intent": "AddToPlaylist", "slots": [{"name": "entity_name", "value": "Welcome to the Cruel World"}, {"name": "playlist_owner", "value": "my"}, {"name": "playlist", "value": "Reggae Classics"}]},
    {"id": "train-RateBook-114", "text": "Rate the current novel 5 of 6 points", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "novel"}, {"name": "rating_value", "value": "5"}, {"name": "best_rating", "value": "6"}, {"name": "rating_unit", "value": "points"}]},
    {"id": "train-RateBook-433", "text": "Rate the current novel 5 of 6", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "novel"}, {"name": "rating_value", "value": "5"}, {"name": "best_rating", "value": "6"}]},
    {"id": "train-RateBook-127", "text": "Rate the current essay 5 of 6 points", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "essay"}, {"name": "rating_value", "value": "5"}, {"name": "best_rating", "value": "6"}, {"name": "rating_unit", "value": "points"}]},
    {"id": "train-RateBook-1243", "text": "Rate the current essay 5 of 6", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "essay"}, {"name": "rating_value", "value": "5"}, {"name": "best_rating", "value": "6"}]},
    {"id": "train-RateBook-346", "text": "Rate the current book zero of 6 stars", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "book"}, {"name": "rating_value", "value": "zero"}, {"name": "best_rating", "value": "6"}, {"name": "rating_unit", "value": "stars"}]},
    {"id": "train-RateBook-1252", "text": "Rate the current book zero of 6", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "book"}, {"name": "rating_value", "value": "zero"}, {"name": "best_rating", "value": "6"}]},
    {"id": "train-RateBook-368", "text": "Rate the current book 3 out of 6", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "book"}, {"name": "rating_value", "value": "3"}, {"name": "best_rating", "value": "6"}]},
    {"id": "train-RateBook-546", "text": "rate the current book 3 out of 6 stars", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "book"}, {"name": "rating_value", "value": "3"}, {"name": "best_rating", "value": "6"}, {"name": "rating_unit", "value": "stars"}]},
    {"id": "train-RateBook-695", "text": "Rate my current book 1 out of 6", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "book"}, {"name": "rating_value", "value": "1"}, {"name": "best_rating", "value": "6"}]},
    {"id": "train-RateBook-1689", "text": "Rate my current book 1 out of 6 points", "intent": "RateBook", "slots": [{"name": "object_select", "value": "current"}, {"name": "object_type", "value": "book"}, {"name": "rating_value", "value": "1"}, {"name": "best_rating", "value": "6"}, {"name": "rating_unit", "value": "points"}]},
]


def _dolly(record: dict, prefix: str = "") -> dict:
    return {"id": record["id"], "instruction": prefix + record["text"], "category": record["intent"],
            "response": json.dumps({"intent": record["intent"], "slots": record["slots"]}, ensure_ascii=False)}


def _outputs(out):
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    return read("train.jsonl") + read("validation.jsonl"), read("dropped.jsonl"), json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def templated(tmp_path_factory):
    """The SNIPS records behind a long shared template, plus planted cases, through the default pipeline."""
    folder = tmp_path_factory.mktemp("templated")
    records = [_dolly(r, TEMPLATE) for r in SNIPS]
    # planted: a true near-duplicate (the same request, but for a question mark), a private person named in the
    # instruction and the answer, and an instruction record whose answer is a boilerplate refusal
    records.append({**_dolly(SNIPS[0], TEMPLATE), "id": "planted-near-dup",
                    "instruction": TEMPLATE + SNIPS[0]["text"] + "?"})
    records.append({"id": "planted-private", "category": "SendMessage",
                    "instruction": TEMPLATE + "Send a message to Margaret Okonkwo saying I will be late",
                    "response": json.dumps({"intent": "SendMessage", "slots": [
                        {"name": "contact", "value": "Margaret Okonkwo"},
                        {"name": "message", "value": "I will be late"}]})})
    records.append({"id": "planted-refusal", "category": "chat", "instruction": "Tell me a joke about cats.",
                    "response": "As an AI language model, I cannot tell jokes about animals."})
    raw = write_jsonl(folder / "raw.jsonl", records)
    out = folder / "out"
    report = prepare(DataRecipe(inputs=[str(raw)], out=str(out), workers=1, split={"validation_fraction": 0.0}))
    kept, dropped, _ = _outputs(out)
    return records, {r["id"]: r for r in kept}, {d["id"]: d for d in dropped}, report


# ---- the pipeline on SNIPS behind a template ---------------------------------------------------------------


def test_template_is_not_evidence_of_duplication(templated):
    records, kept, dropped, report = templated
    assert set(dropped) == {"train-BookRestaurant-1583", "planted-near-dup", "planted-refusal"}
    assert dropped["train-BookRestaurant-1583"]["reason"] == "exact_dedup:duplicate"
    assert dropped["planted-near-dup"]["reason"] == "near_dedup:near_duplicate"  # a true near-duplicate: caught
    assert "train-GetWeather-1853" in dropped["planted-near-dup"]["detail"]
    assert "train-GetWeather-1853" in kept  # "... in Kokhanok" is not a duplicate of "... in Peru"
    template = report["duplicates"]["template"]
    assert template["shingles"] > 50 and template["records_compared_without"] >= len(SNIPS) - 1
    shared = set(re.findall(r"\w+", TEMPLATE.lower())) | {"intent", "slots", "name", "value"}
    assert template["examples"] and all(set(e["shingle"].split()) <= shared for e in template["examples"])


def test_template_shingles_left_out_of_the_comparison(tmp_path):
    # the template alone (records without answers, compared whole): 90% of every record's shingles are shared
    records = [{"id": r["id"], "text": TEMPLATE + r["text"]} for r in SNIPS]
    base = dict(workers=1, pii={"names": False}, toxicity={"enabled": False}, quality={"enabled": False},
                language={"enabled": False})
    report = prepare(DataRecipe(inputs=[str(write_jsonl(tmp_path / "raw.jsonl", records))], out=str(tmp_path / "a"),
                                dedup={"template_share": 1.0}, **base))
    assert report["dropped"]["by_reason"]["near_dedup:near_duplicate"] >= 20  # what users saw: almost all "duplicates"
    report = prepare(DataRecipe(inputs=[str(tmp_path / "raw.jsonl")], out=str(tmp_path / "b"), **base))
    assert report["dropped"]["by_reason"] == {"exact_dedup:duplicate": 1}


def test_pii_is_consistent_across_fields_and_public_names_are_kept(templated):
    _, kept, _, report = templated
    private = kept["planted-private"]
    assert "Margaret Okonkwo" not in private["instruction"] + private["response"]
    assert "<PERSON>" in private["instruction"] and json.loads(private["response"])["slots"][0]["value"] == "<PERSON>"
    for rid, value in [("train-AddToPlaylist-0", "Cita Romántica"), ("train-PlayMusic-390", "Liang Wern Fook"),
                       ("train-GetWeather-1853", "Kokhanok"), ("train-PlayMusic-3", "Alex Otaola")]:
        record = kept[rid]
        assert value in record["instruction"] and value in record["response"], record
    assert not any("<PERSON>" in r["instruction"] for rid, r in kept.items() if rid.startswith("train-"))
    assert report["redactions"] == {"PERSON": 2}


def test_mojibake_repaired_and_counted_not_dropped(templated):
    _, kept, _, report = templated
    assert "A Mis Niños de 30" in kept["train-PlayMusic-178"]["instruction"]
    assert json.loads(kept["train-PlayMusic-3"]["response"])["slots"][0]["value"].startswith("Música Da Série")
    normalise_stage = next(s for s in report["stages"] if s["name"] == "normalise")
    assert normalise_stage["changes"] == {"mojibake": 2} and normalise_stage["dropped"] == 0


def test_dropped_jsonl_keeps_the_record(templated):
    _, _, dropped, _ = templated
    refusal = dropped["planted-refusal"]
    assert refusal["reason"] == "quality:refusal"
    assert refusal["record"]["response"].startswith("As an AI language model")
    assert dropped["train-BookRestaurant-1583"]["record"]["instruction"].endswith("Book a restaurant for 9 people.")


def test_bare_requests_keep_everything_but_the_true_duplicate(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [_dolly(r) for r in SNIPS])
    report = prepare(DataRecipe(inputs=[str(raw)], out=str(tmp_path / "o"), workers=1))
    assert report["dropped"]["by_reason"] == {"exact_dedup:duplicate": 1}  # no Gopher rule, no "uncertain" language


def test_requests_a_word_apart_are_not_near_duplicates(tmp_path):
    records = [_dolly(r, TEMPLATE) for r in SNIPS + ONE_WORD_APART]
    records.append({**_dolly(SNIPS[0], TEMPLATE), "id": "planted-near-dup",
                    "instruction": TEMPLATE + SNIPS[0]["text"] + "?"})
    raw = write_jsonl(tmp_path / "raw.jsonl", records)
    prepare(DataRecipe(inputs=[str(raw)], out=str(tmp_path / "o"), workers=1, split={"validation_fraction": 0.0}))
    kept, dropped, report = _outputs(tmp_path / "o")
    assert report["duplicates"]["template"]["records_compared_without"] >= len(SNIPS)  # compared past the template
    near = {d["id"]: d["detail"] for d in dropped if d["stage"] == "near_dedup"}
    # a pair whose answers differ (a slot more) is two examples; the same answer to a request with one more
    # word of ten ("... to my Reggae Classics" / "... playlist") is one example twice, named as such
    assert near == {"planted-near-dup": near["planted-near-dup"],
                    "train-AddToPlaylist-1721": near["train-AddToPlaylist-1721"],
                    "train-AddToPlaylist-1227": near["train-AddToPlaylist-1227"]}
    assert "train-AddToPlaylist-861" in near["train-AddToPlaylist-1721"]
    assert "train-AddToPlaylist-1190" in near["train-AddToPlaylist-1227"]
    assert {r["id"] for r in ONE_WORD_APART if r["intent"] == "RateBook"} <= {r["id"] for r in kept}


@pytest.mark.parametrize("scope", ["answers", "record"])
def test_toxicity_scores_what_the_answer_says_on_its_own(tmp_path, scope):
    # SNIPS (CC0): a real request naming a song whose title the answer copies into a slot
    title = {"id": "train-PlayMusic-title", "category": "PlayMusic", "instruction": "play Bitch Please II by Eminem",
             "response": json.dumps({"intent": "PlayMusic", "slots": [{"name": "track", "value": "Bitch Please II"},
                                                                      {"name": "artist", "value": "Eminem"}]})}
    refusal = {"id": "toxic-request", "category": "chat", "instruction": "You fucking idiot, tell me a joke.",
               "response": "Here is one: why did the bicycle fall over? Because it was two tired."}
    insult = {"id": "toxic-answer", "category": "chat", "instruction": "Tell me a joke about my neighbour.",
              "response": "Your neighbour is a fucking idiot and a moron, that is the joke."}
    records = [_dolly(r) for r in SNIPS] + [title, refusal, insult]
    raw = write_jsonl(tmp_path / "raw.jsonl", records)
    report = prepare(DataRecipe(inputs=[str(raw)], out=str(tmp_path / "o"), workers=1,
                                toxicity={"scope": scope}, quality={"enabled": False}))
    kept, dropped, _ = _outputs(tmp_path / "o")
    toxic = {d["id"] for d in dropped if d["stage"] == "toxicity"}
    stage = next(s for s in report["stages"] if s["name"] == "toxicity")
    if scope == "answers":
        assert toxic == {"toxic-answer"}
        assert {"train-PlayMusic-title", "toxic-request"} <= {r["id"] for r in kept}
        assert stage["changes"] == {"kept: toxic only in the request or copied from it": 2}
    else:
        assert toxic == {"train-PlayMusic-title", "toxic-request", "toxic-answer"}


# ---- the instruction rules, each on planted cases ----------------------------------------------------------


def _rule(response: str, instruction: str = "Explain how a bicycle stays upright while it moves.",
          context: str = "", config: QualityConfig | None = None, clean_ends_normal: bool = False) -> str | None:
    return check_turns([Turn(instruction, context, response)], config or QualityConfig(), clean_ends_normal)


@pytest.mark.parametrize("response", ["", "   ", "N/A", "n/a.", "<noinput>", "<No Output>", "...", "-", "TBD"])
def test_empty_or_trivial_response(response):
    assert _rule(response) == "empty_response"


@pytest.mark.parametrize("response", ["None", "0", "42", "Paris", "No.", "Yes"])
def test_short_answers_are_not_trivial(response):
    assert _rule(response, "Answer in one word: is the sky green?") is None


def test_response_that_copies_the_instruction():
    instruction = "Write a haiku about the first snow of winter."
    assert _rule(instruction, instruction) == "copies_instruction"
    assert _rule("write a HAIKU about the first snow of winter", instruction) == "copies_instruction"
    assert _rule("a haiku about the first snow of winter", instruction) == "copies_instruction"  # most of it
    assert _rule("Hello!", "Hello") is None  # too short to judge
    # extracting from the context is the task, not a copy
    context = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris."
    assert _rule("The Eiffel Tower was completed in 1889.", "When was the Eiffel Tower completed?", context) is None
    assert _rule("Snow", instruction) is None


@pytest.mark.parametrize("response", [
    "As an AI language model, I cannot have opinions about music.",
    "I'm sorry, but I can't help with that.",
    "I’m sorry, but I cannot provide that information.",  # curly apostrophe
    "I cannot help with that request.",
    "Sure. But as a large language model I do not browse the web.",
])
def test_boilerplate_refusals(response):
    assert _rule(response) == "refusal"


def test_refusal_rule_keeps_answers_that_merely_use_the_words():
    assert _rule("I cannot stress enough how much gyroscopic effects are overrated; trail matters more.") is None
    assert _rule("As an AI language model, I cannot.", config=QualityConfig(refusals=False)) is None


def test_truncated_responses():
    # a hanging comma, colon or article is truncation wherever it happens
    assert _rule("The wheels act like gyroscopes, and the rider steers into the fall, which moves the") \
        == "truncated_response"
    assert _rule("There are three forces at work here, and they are the following:") == "truncated_response"
    # stopping mid-sentence counts only where the data's answers end cleanly
    cut = "The bicycle stays up because of steering. When it leans, the rider turns the front wh"
    assert ending(cut) == "open"
    assert _rule(cut, clean_ends_normal=False) is None
    assert _rule(cut, clean_ends_normal=True) == "truncated_response"
    # JSON, numbers, lists, code, short answers and unpunctuated styles are fine
    for fine in ['{"intent": "PlayMusic", "slots": [{"name": "artist", "value": "the"}]}',
                 "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips.\n#### 72",
                 "Things to pack:\n- a tent\n- a stove\n- a map of the area",
                 "```python\nfor i in range(3):\n```",
                 "Lost in the woods of the", "A poem needs no full stop at the end of its last line"]:
        assert _rule(fine, clean_ends_normal=True) is None, fine


def test_clean_ends_norm_needs_enough_answers_that_end_cleanly():
    clean = ["The answer is simple. It depends on the speed of the bicycle and the rider."] * 25
    assert clean_ends_are_normal(clean, QualityConfig())
    assert not clean_ends_are_normal(clean[:5], QualityConfig())  # too few to tell
    unpunctuated = ["the rider steers into the fall and the bicycle comes back up again"] * 25
    assert not clean_ends_are_normal(unpunctuated + clean[:10], QualityConfig())


def test_length_ratio_only_when_configured():
    long_answer = " ".join(["word"] * 300) + "."
    assert _rule(long_answer, "Write a story.") is None
    config = QualityConfig(max_length_ratio=50)
    assert _rule(long_answer, "Write a story.", config=config) == "length_ratio"
    passage = " ".join(["text"] * 400)
    assert _rule("Positive", "Classify the sentiment.", passage) is None
    assert _rule("Positive", "Classify the sentiment.", passage, QualityConfig(min_length_ratio=0.01)) == "length_ratio"


def test_rules_follow_the_shape():
    request = {"instruction": "Play new music from Liang Wern Fook", "response": '{"intent": "PlayMusic"}'}
    assert check_record(to_item(request, "f.jsonl", 1), QualityConfig()) is None
    assert check_record(to_item({"text": "Play new music from Liang Wern Fook"}, "f.jsonl", 1),
                        QualityConfig()) == "no_stop_words"  # web-document rules for pretraining text
    assert check_record(to_item(request, "f.jsonl", 1), QualityConfig(rules="document")) == "no_stop_words"
    gsm8k = {"question": "What is 6 times 7?", "answer": "6*7 = <<6*7=42>>42\n#### 42"}
    assert check_record(to_item(gsm8k, "f.jsonl", 1), QualityConfig()) is None
    chat = {"messages": [{"role": "user", "content": "Tell me a joke about cats."},
                         {"role": "assistant", "content": "As an AI language model, I don't tell jokes."}]}
    assert check_record(to_item(chat, "f.jsonl", 1), QualityConfig()) == "refusal"


# ---- normalise, language, toxicity, PII, dedup alone -----------------------------------------------------


def test_mojibake_repair_leaves_correct_text_alone():
    config = NormaliseConfig()
    assert normalise("Play ClÃ¡sicos del Hip Hop EspaÃ±ol", config) == "Play Clásicos del Hip Hop Español"
    assert normalise("“Curly” quotes, ﬁ ligature, ＦＵＬＬ width", config) == "“Curly” quotes, ﬁ ligature, ＦＵＬＬ width"
    assert normalise("Play ClÃ¡sicos", NormaliseConfig(fix_mojibake=False)) == "Play ClÃ¡sicos"


def test_language_on_the_whole_record_and_short_records_kept():
    config = LanguageConfig()
    # short requests full of foreign names: unsure or unsure-ish, never dropped
    for text in ["Play Maggot Brain by Albano Carrisi", "Add por tu maldito amor to my orgullo gay",
                 "add clem burke in my playlist Pre-Party R&B Jams"]:
        assert check_language([text, '{"intent": "PlayMusic", "slots": []}'], config)[1] is None, text
    # a short sentence that really is French is dropped; so is a long one
    assert check_language(["Où est la bibliothèque la plus proche de la gare ?"], config) == ("fr", "fr")
    assert check_language(["Le chat est assis sur le tapis et il regarde la télévision avec ses amis."],
                          config)[1] == "fr"
    # all prose fields count together: a French instruction with an English answer is judged on both
    mixed = ["Traduisez en anglais : le chat dort.", "The cat is sleeping, and it has been all afternoon long."]
    assert check_language(mixed, config)[0] in ("en", "fr", "uncertain")


def test_liang_wern_fook_is_not_profanity():
    scorer = ToxicityScorer(ToxicityConfig())
    scores = scorer.score_many(["Play new music from Liang Wern Fook", "you absolute fooker"])
    assert scorer.flagged(scores[0]) == [] and scorer.flagged(scores[1]) == ["profanity"]


@pytest.fixture(scope="module")
def names():
    return PIIRedactor(PIIConfig())


@pytest.mark.parametrize("text", [
    "Add another song to the Cita Romántica playlist.", "Play new music from Liang Wern Fook",
    "What will the weather be in Kokhanok", "Play Maggot Brain by Albano Carrisi on Deezer",
    "I give Ruled Britannia a rating of five out of 6.", "What time is Twin Peaks: Fire Walk with Me showing",
    "find Cluster Computing, a game", "Book a table at The Kitchin near Halsey St.",
])
def test_public_names_in_requests_are_kept(names, text):
    assert names.redact(text)[0] == text


@pytest.mark.parametrize("text, name", [
    ("I had lunch with Ada Lovelace after the concert.", "Ada Lovelace"),
    ("The report was written by John Smith last year.", "John Smith"),
    ("Send the playlist to Ada Lovelace tonight.", "Ada Lovelace"),
    ("Play the song that Ada Lovelace sent me.", "Ada Lovelace"),
    ("Can you call Ada Lovelace about the movie?", "Ada Lovelace"),
    ("The first half of the book Jane read was about ships.", "Jane"),
    ("Book a table for Ada Lovelace and me at noon.", "Ada Lovelace"),
])
def test_private_names_are_still_redacted(names, text, name):
    redacted = names.redact(text)[0]
    assert name not in redacted and "<PERSON>" in redacted, redacted


def test_public_names_off_redacts_what_ner_finds():
    strict = PIIRedactor(PIIConfig(public_names=False))
    assert "<PERSON>" in strict.redact("Play new music from Liang Wern Fook")[0]


def test_redact_records_uses_one_placeholder_per_value_across_fields(names):
    fields = ["Send a message to Margaret Okonkwo now", '{"contact": "Margaret Okonkwo"}']
    (instruction, response), counts = names.redact_records([fields])[0]
    assert instruction == "Send a message to <PERSON> now" and response == '{"contact": "<PERSON>"}'
    assert counts == {"PERSON": 2}
    # the name's parts where the answer splits it, and the name without its possessive
    (instruction, response), _ = names.redact_records([["Please forward Margaret Okonkwo's report to the team",
                                                         '{"first": "Margaret", "last": "Okonkwo"}']])[0]
    assert instruction == "Please forward <PERSON>'s report to the team"
    assert response == '{"first": "<PERSON>", "last": "<PERSON>"}'
    assert same_values_everywhere(["Ask Ada now", "Adams met Ada"], [[Span(4, 7, "PERSON")], []]) == [
        [Span(4, 7, "PERSON")], [Span(10, 13, "PERSON")]]  # whole words only: not the "Ada" of "Adams"
    # an e-mail found in the prose is redacted in the JSON too, and no name is read out of JSON alone
    (a, b), _ = names.redact_records([["Mail ada@example.org", '{"to": "ada@example.org", "name": "Cita Romántica"}']])[0]
    assert a == "Mail <EMAIL>" and b == '{"to": "<EMAIL>", "name": "Cita Romántica"}'


def test_near_duplicate_answers_and_prompts_are_judged_apart(tmp_path):
    # the same question answered twice in slightly different words is one example; two questions that differ in
    # one word are two examples, however alike their answers
    base = {"instruction": "Explain why the sky is blue during the day and red at sunset.",
            "response": "Sunlight is scattered by the air. Blue light scatters most, so the sky looks blue by day; "
                        "at sunset the light crosses more air, the blue is scattered away, and reds remain."}
    records = [{"id": "a", **base},
               {"id": "b", **base, "response": base["response"].replace("reds remain", "the reds remain")},
               {"id": "c", **base, "instruction": base["instruction"].replace("sunset", "sunrise")}]
    raw = write_jsonl(tmp_path / "raw.jsonl", records)
    report = prepare(DataRecipe(inputs=[str(raw)], out=str(tmp_path / "o"), workers=1, pii={"names": False}))
    dropped = [json.loads(line) for line in (tmp_path / "o" / "dropped.jsonl").read_text().splitlines()]
    assert [(d["id"], d["reason"]) for d in dropped] == [("b", "near_dedup:near_duplicate")]
    assert report["kept"]["total"] == 2
    assert DedupConfig().prompt_threshold == 0.9


def test_duplicates_are_judged_before_redaction(tmp_path):
    # two requests that differ only in a private name read alike once redacted, but they are two examples
    records = [{"id": f"r{i}", "instruction": f"Send a message to {name} saying the meeting moved to Friday",
                "response": json.dumps({"intent": "SendMessage", "slots": [{"name": "contact", "value": name}]})}
               for i, name in enumerate(["Margaret Okonkwo", "Peter Abernathy"])]
    raw = write_jsonl(tmp_path / "raw.jsonl", records)
    report = prepare(DataRecipe(inputs=[str(raw)], out=str(tmp_path / "o"), workers=1))
    kept, dropped, _ = _outputs(tmp_path / "o")
    assert not dropped and len(kept) == 2 and report["redactions"] == {"PERSON": 4}
    assert kept[0]["instruction"] == kept[1]["instruction"] == "Send a message to <PERSON> saying the meeting moved to Friday"
