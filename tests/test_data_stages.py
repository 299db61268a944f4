"""Each data stage alone: normalise, quality, language, decontamination, MinHash dedup, balance and split, the
streaming reader."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import xxhash
from datasketch import MinHash

from seedbed.curate.balance import BalanceConfig, SplitConfig, balance, split
from seedbed.curate.decontaminate import DecontaminateConfig, EvalNgrams
from seedbed.curate.dedup import DedupConfig, band_keys, near_duplicate_clusters, shingles, signature
from seedbed.curate.normalise import NormaliseConfig, normalise
from seedbed.curate.quality import LanguageConfig, QualityConfig, check_language, check_quality
from seedbed.curate.records import map_texts, text_of, to_item
from seedbed.data.readers import stream_records

WORDS = ("river mountain village teacher market garden winter letter bridge window station doctor morning "
         "kitchen forest library engine harbour island painter farmer soldier summer lantern meadow castle").split()


def _paragraph(rng: random.Random, n: int = 80) -> str:
    return " ".join(rng.choice(WORDS) + rng.choice(["", "s", "ed", "ing"]) for _ in range(n))


def test_signature_is_datasketch_minhash():
    text = "the quick brown fox jumps over the lazy dog and then the dog sleeps in the warm sun"
    config = DedupConfig()
    reference = MinHash(num_perm=config.num_perm, seed=config.seed, hashfunc=xxhash.xxh32_intdigest, scheme="legacy")
    reference.update_batch(list(shingles(text, config.shingle_size)))
    assert np.array_equal(signature(text, config), reference.hashvalues.astype(np.uint32))


def test_near_duplicates_found_and_distinct_texts_left_alone():
    rng = random.Random(0)
    config = DedupConfig()
    originals = [_paragraph(rng) for _ in range(200)]
    copies = []
    for text in originals[:50]:  # a planted near-duplicate: 2 of 80 words changed
        words = text.split()
        for i in rng.sample(range(len(words)), 2):
            words[i] = rng.choice(WORDS)
        copies.append(" ".join(words))
    texts = originals + copies
    signatures = np.stack([signature(t, config) for t in texts])
    found = near_duplicate_clusters(band_keys(signatures, config), signatures, config.threshold)
    planted = {200 + k: k for k in range(50)}
    true_positives = sum(found.get(i, (None,))[0] == j for i, j in planted.items())
    assert true_positives / 50 >= 0.9  # recall
    assert true_positives / max(len(found), 1) >= 0.95  # precision


def test_shingle_counts_bound_what_an_estimate_lets_through():
    # Two answered records whose signatures agree on every permutation (an estimate of 1.0, which 128 permutations
    # give a 5-against-6-shingle pair now and then) but whose prompts hold 5 and 6 shingles: at most 0.83 alike,
    # under prompt_threshold 0.9, so both are kept; with equal counts the pair is the duplicate it looks like.
    config = DedupConfig()
    prompt, answer = signature("rate the current novel 5 of 6", config), signature('{"intent": "RateBook"}', config)
    whole = np.stack([np.minimum(prompt, answer)] * 2)
    keys = band_keys(whole, config)
    found = lambda sizes: near_duplicate_clusters(  # noqa: E731
        keys, whole, config.threshold, prompt_threshold=0.9,
        sides=[(prompt, answer, sizes[0], 4), (prompt, answer, sizes[1], 4)])
    assert found((5, 6)) == {}
    assert found((6, 6)) == {1: (0, 1.0)}


def test_normalise():
    config = NormaliseConfig(strip_markup=True)
    assert normalise("Cafe\u0301  au\tlait [12]\n\n\n\nnext  ", config) == "Café au lait\n\nnext"
    assert normalise("a <script>x</script> b&amp;c", config) == "a x b&c"
    assert normalise("keep [12] here", NormaliseConfig(strip_citations=False)) == "keep [12] here"


def test_quality_rules_name_what_they_drop():
    config = QualityConfig()
    assert check_quality("What is the capital of France? It is Paris, and that is where the Louvre is.", config) is None
    assert check_quality("hi", config) == "too_short"
    assert check_quality("#tag #tag #tag and the #more #of #them", config) == "symbol_ratio"
    assert check_quality("12 34 56 78 90 12 34 and the 56 78 90 of 11", config) in {"not_alphabetic", "digit_ratio"}
    spam = " ".join(["the best deal of the year buy now"] * 10)
    assert check_quality(spam, config).startswith(("top_", "duplicate_"))
    assert check_quality("Lorem ipsum dolor sit amet, the text that goes with a page of the site", config) == "boilerplate"


def test_language():
    config = LanguageConfig()
    assert check_language("The weather is lovely today and we are going to the beach.", config) == ("en", None)
    assert check_language("Der Hund schläft im Garten und die Katze sitzt auf dem Dach.", config) == ("de", "de")
    assert check_language("ok thanks", config) == ("too_short_to_tell", None)


def test_decontamination_matches_13grams_and_short_eval_items_whole():
    config = DecontaminateConfig()
    question = "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?"
    index = EvalNgrams.from_texts([question, "What is the boiling point of water at sea level?"], config)
    assert index.overlaps("Here is a puzzle: a robe takes 2 bolts of blue fiber and half that much white fiber, right?")
    assert index.overlaps("Quiz: what is the boiling point of water at sea level? Answer below.")
    assert not index.overlaps("A robe takes 2 bolts of blue fiber.")


def test_split_is_seeded_stratified_and_stable():
    ids = [f"r{i}" for i in range(200)]
    categories = ["a" if i < 150 else "b" for i in range(200)]
    config = SplitConfig(validation_fraction=0.1)
    validation = split(ids, categories, config)
    assert split(ids, categories, config) == validation
    assert sum(categories[i] == "a" for i in validation) == 15 and sum(categories[i] == "b" for i in validation) == 5
    assert split(ids, categories, SplitConfig(validation_fraction=0.1, seed=7)) != validation
    # adding records does not move the ones already there out of validation (mostly: ranks are per id)
    more = split(ids + [f"x{i}" for i in range(20)], categories + ["a"] * 20, config)
    assert len(validation & more) >= 0.8 * len(validation)


def test_balance_caps_and_repeats_at_most_max_repeat():
    ids = [f"r{i}" for i in range(30)]
    categories = ["big"] * 25 + ["small"] * 5
    dropped, copies = balance(ids, categories, BalanceConfig(max_per_category=10))
    assert len(dropped) == 15 and not copies
    dropped, copies = balance(ids, categories, BalanceConfig(min_per_category=20, max_repeat=3))
    assert not dropped and sum(copies.values()) == 10 and max(copies.values()) <= 2


def test_text_fields_of_every_shape_are_rewritten_and_others_kept():
    record = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}],
              "meta": {"source": "Hi there"}}
    item = map_texts(to_item(record, "f.jsonl", 1), str.upper)
    assert item["record"]["messages"][1]["content"] == "HELLO" and item["record"]["meta"]["source"] == "Hi there"
    assert text_of(item) == "HI THERE\nHELLO"


def test_stream_records_reads_gzip_line_by_line(tmp_path):
    path = tmp_path / "big.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(5000):
            f.write(json.dumps({"text": f"line {i} \u2028 with a separator"}) + "\n")
    problems = []
    records = list(stream_records([path], problems))
    assert not problems and len(records) == 5000
    assert records[-1][1] == 5000 and "\u2028" in records[0][2]["text"]


def test_a_stage_retried_record_by_record_counts_each_drop_once(monkeypatch):
    import seedbed.curate.stages as stages
    from seedbed.recipe import DataRecipe

    def judged(item, config, *args):  # a rule drops "short"; "fragile" makes the stage raise
        if item["id"] == "fragile":
            raise ValueError("cannot judge this one")
        return "too_short" if item["id"] == "short" else None

    monkeypatch.setattr(stages, "check_record", judged)
    recipe = DataRecipe(inputs=["-"], pii={"enabled": False}, toxicity={"enabled": False},
                        language={"enabled": False}, dedup={"near": False})
    items = [to_item({"id": i, "text": f"record {i}"}, "f.jsonl", n) for n, i in enumerate(["short", "fragile", "ok"])]
    result = stages.ChunkWorker(recipe).process(items)
    # The chunk attempt dropped "short" before "fragile" raised; the retry record by record must not count it again.
    assert sorted(d["id"] for d in result["dropped"]) == ["fragile", "short"]
    assert result["stats"]["quality"]["dropped"] == 2
    assert dict(result["stats"]["quality"]["reasons"]) == {"quality:too_short": 1, "quality:error": 1}
    assert [item["id"] for item in result["kept"]] == ["ok"]
