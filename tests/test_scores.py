"""`Backend.score`: each token's log-probability given the tokens before it, the same alone or batched, and the
same in both engines at f32."""

import math

import pytest
import torch

from seedbed.inference.hf import TorchBackend
from seedbed.inference.scores import is_greedy, total
from seedbed.models import load_model


@pytest.fixture(scope="module")
def backend(tiny_model):
    return TorchBackend(*load_model(str(tiny_model), device="cpu"))


def encode(backend, text):
    return backend.tokenizer(text, add_special_tokens=True)["input_ids"]


def test_score_is_the_log_softmax_of_one_forward_pass(backend):
    ids = encode(backend, "Natalia sold clips to 48 of her friends in April")
    with torch.no_grad():
        logprobs = torch.log_softmax(backend.model(torch.tensor([ids])).logits[0].float(), -1)
    [scores] = backend.score([ids], [3], top_k=3)
    assert [s.token for s in scores] == ids[3:]
    for t, s in zip(range(3, len(ids)), scores):
        assert s.logprob == pytest.approx(float(logprobs[t - 1, ids[t]]), abs=1e-5)
        expected = logprobs[t - 1].topk(3)
        assert [k for k, _ in s.top] == expected.indices.tolist()
        assert [v for _, v in s.top] == pytest.approx(expected.values.tolist(), abs=1e-5)
    # a hand check of what the numbers mean: probabilities at a position sum to one
    assert float(logprobs[4].exp().sum()) == pytest.approx(1.0, abs=1e-4)
    assert total(scores) == pytest.approx(sum(s.logprob for s in scores))
    assert is_greedy(scores) == all(s.top[0][0] == s.token for s in scores)


def test_batched_and_sliced_scores_equal_scoring_alone(backend, monkeypatch):
    import seedbed.inference.hf as hf

    texts = ["A short one", "Weng earns $12 an hour for babysitting, and yesterday she did 50 minutes", "Hi there"]
    sequences = [encode(backend, t) for t in texts]
    starts = [1, 5, 2]
    alone = [backend.score([ids], [start])[0] for ids, start in zip(sequences, starts)]
    together = backend.score(sequences, starts)
    monkeypatch.setattr(hf, "SCORED_PER_FORWARD", 4)  # several groups, and the long one in slices
    sliced = backend.score(sequences, starts)
    for a, b, c in zip(alone, together, sliced):
        assert [s.token for s in a] == [s.token for s in b] == [s.token for s in c]
        assert [s.logprob for s in b] == pytest.approx([s.logprob for s in a], abs=1e-4)
        assert [s.logprob for s in c] == pytest.approx([s.logprob for s in a], abs=1e-4)
    assert all(math.isfinite(s.logprob) and s.logprob <= 0 for row in together for s in row)


def test_score_refuses_a_start_without_context(backend):
    with pytest.raises(ValueError, match="start 0"):
        backend.score([[1, 2, 3]], [0])


def test_llama_cpp_scores_equal_torch_at_f32(backend, tiny_model, tmp_path):
    pytest.importorskip("llama_cpp")
    from seedbed.inference.llamacpp import LlamaCppBackend
    from seedbed.quantize.gguf_export import write_gguf_model

    gguf_dir = write_gguf_model(tiny_model, tmp_path / "f32", "f32").parent
    llama = LlamaCppBackend(str(gguf_dir), n_threads=2)
    sequences = [encode(backend, "Betty is saving money for a new wallet"), encode(backend, "Two plus three")]
    ours, reference = llama.score(sequences, [1, 2], top_k=2), backend.score(sequences, [1, 2], top_k=2)
    for a, b in zip(ours, reference):
        assert [s.token for s in a] == [s.token for s in b]
        assert [s.logprob for s in a] == pytest.approx([s.logprob for s in b], abs=1e-3)
        assert [s.top[0][0] for s in a] == [s.top[0][0] for s in b]


def test_sequences_sharing_a_context_score_as_alone(backend, monkeypatch):
    import seedbed.inference.hf as hf

    preamble = "Q: What is human life expectancy in the United States?\nA: 78 years.\n\n"  # shared by both questions
    contexts = [encode(backend, preamble + q) for q in ("Q: What do people aim to do at work?\nA:", "Q: Why?\nA:")]
    assert contexts[0][: hf.MIN_SHARED_PREFIX] == contexts[1][: hf.MIN_SHARED_PREFIX]
    choices = [" Complete the job.", " Learn from each other, mostly.", " Talk."]
    sequences = [c + backend.tokenizer(x, add_special_tokens=False)["input_ids"] for c in contexts for x in choices]
    starts = [len(c) for c in contexts for _ in choices]
    alone = [backend.score([ids], [start], top_k=2)[0] for ids, start in zip(sequences, starts)]
    # each question's context runs once (after the preamble, run once for both), its cache copied per choice
    shared = backend.score(sequences, starts, top_k=2)
    monkeypatch.setattr(hf, "SCORED_PER_FORWARD", 8)  # and in batches of fewer choices
    batched = backend.score(sequences, starts, top_k=2)
    monkeypatch.setattr(hf, "MIN_SHARED_PREFIX", 10_000)  # no preamble run apart
    whole = backend.score(sequences, starts, top_k=2)
    for a, *others in zip(alone, shared, batched, whole):
        for b in others:
            assert [s.token for s in a] == [s.token for s in b]
            assert [s.logprob for s in b] == pytest.approx([s.logprob for s in a], abs=1e-4)
            assert [s.top[0][0] for s in b] == [s.top[0][0] for s in a]
