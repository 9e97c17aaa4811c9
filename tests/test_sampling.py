"""The sampling engine on a tiny random model: greedy equals a plain generate loop, batch size
changes nothing, prefixes are computed once, sequences stop and retire, samples follow the
model's distribution with distinct reproducible seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgfact.errors import KgfactError
from kgfact.models import ModelConfig, load_model
from kgfact.sampling import KgfactEngine, Request, SamplingConfig, cut_at_stop, sample_stream

PREFIXES = ["Q: Which country is Town 1 in?\nA: Lemuria\n\n",
            "Q: What is the capital city of Atlantis?\nA: Town 0\n\nQ: Where?\nA: Here\n\n"]
QUESTIONS = ["Q: Which country is Town 4 in?\nA:", "Q: Which country is Town 17 in?\nA:",
             "Q: What is the capital city of Lemuria?\nA:", "Q: Where is Mythica?\nA:"]


def requests() -> list[Request]:
    return [Request(f"q{i}#{p}", prefix, q) for i, q in enumerate(QUESTIONS)
            for p, prefix in enumerate(PREFIXES)]


@pytest.fixture(scope="module")
def fp32(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32"))


@pytest.fixture(scope="module")
def bf16(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir), dtype="bfloat16"))


def reference_greedy(loaded, request: Request, max_new_tokens: int) -> str:
    """What a plain per-prompt ``model.generate`` answers, on the same token ids."""
    tok = loaded.tokenizer
    ids = tok(request.prefix)["input_ids"] + tok(request.suffix,
                                                 add_special_tokens=False)["input_ids"]
    out = loaded.model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens,
                                do_sample=False, top_k=None, top_p=None)
    return cut_at_stop(tok.decode(out[0][len(ids):], skip_special_tokens=True), ("\n",))


def test_greedy_equals_plain_generate_fp32(fp32):
    config = SamplingConfig(n_samples=0, max_new_tokens=12)
    got = KgfactEngine(fp32).generate(requests(), config)
    want = [reference_greedy(fp32, r, 12) for r in requests()]
    assert [g.greedy for g in got] == want
    assert all(len(w) > 0 for w in want)  # the comparison is not between empty strings


def test_batch_size_changes_nothing(bf16):
    config = SamplingConfig(n_samples=6, max_new_tokens=8)
    one = KgfactEngine(bf16, max_batch=1).generate(requests(), config)
    many = KgfactEngine(bf16, max_batch=64).generate(requests(), config)
    assert one == many
    alone = KgfactEngine(bf16).generate([requests()[3]], config)
    assert alone[0] == many[3]


def test_each_prefix_is_computed_once(fp32):
    engine = KgfactEngine(fp32)
    config = SamplingConfig(n_samples=2, max_new_tokens=4)
    engine.generate(requests(), config)
    prefix_tokens = sum(len(fp32.tokenizer(p)["input_ids"]) for p in PREFIXES)
    assert engine.stats["prefix_tokens"] == prefix_tokens
    suffix_tokens = sum(len(fp32.tokenizer(q, add_special_tokens=False)["input_ids"])
                        for q in QUESTIONS) * len(PREFIXES)
    assert engine.stats["prefill_tokens"] == suffix_tokens  # each prompt prefilled once
    engine.generate([Request("again", PREFIXES[0], "Q: x\nA:")], config)
    assert engine.stats["prefix_tokens"] == prefix_tokens  # reused from the cache


def test_stops_before_the_stop_string(fp32):
    free = KgfactEngine(fp32).generate(requests()[:1], SamplingConfig(n_samples=0,
                                                                      max_new_tokens=10))[0]
    stop = free.greedy[3]  # a character the model really produces at step 4
    config = SamplingConfig(n_samples=0, max_new_tokens=10, stop=(stop,))
    engine = KgfactEngine(fp32)
    stopped = engine.generate(requests()[:1], config)[0]
    assert stopped.greedy == free.greedy[:free.greedy.index(stop)]
    assert engine.stats["forwards"] <= 1 + 1 + 4  # prefix, prefill, then at most 4 steps


def test_identical_continuations_share_rows(fp32):
    engine = KgfactEngine(fp32)
    # a very low temperature makes every sample follow the greedy path
    engine.generate(requests()[:1], SamplingConfig(n_samples=16, temperature=1e-3,
                                                   max_new_tokens=6))
    steps = engine.stats["forwards"] - 2          # minus the prefix and the prefill
    assert engine.stats["rows"] - 1 - 1 == steps  # one row per decoding step, not 17


def test_samples_are_reproducible_distinct_and_seeded(bf16):
    config = SamplingConfig(n_samples=16, temperature=1.0, max_new_tokens=6, seed=3)
    a = KgfactEngine(bf16).generate(requests(), config)
    b = KgfactEngine(bf16).generate(requests(), config)
    assert a == b
    assert len(set(a[0].samples)) > 4  # at T=1 a random model's samples differ
    c = KgfactEngine(bf16).generate(requests(), SamplingConfig(
        n_samples=16, temperature=1.0, max_new_tokens=6, seed=4))
    assert [g.samples for g in a] != [g.samples for g in c]
    assert [g.greedy for g in a] == [g.greedy for g in c]
    first = [sample_stream(3, "k", i).random() for i in range(16)]
    assert len(set(first)) == 16


def test_samples_follow_the_top_k_distribution(fp32):
    request = Request("dist", PREFIXES[0], QUESTIONS[0])
    n, k, temperature = 4000, 5, 2.0
    config = SamplingConfig(n_samples=n, temperature=temperature, top_k=k, max_new_tokens=1,
                            greedy=False)
    got = KgfactEngine(fp32).generate([request], config)[0].samples
    tok = fp32.tokenizer
    ids = tok(request.prefix)["input_ids"] + tok(request.suffix,
                                                 add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = fp32.model(torch.tensor([ids])).logits[0, -1].double()
    values, top = torch.topk(logits, k)
    probs = torch.softmax(values / temperature, -1).numpy()
    texts = [tok.decode([t]) for t in top.tolist()]
    counts = np.array([sum(s == t for s in got) for t in texts])
    assert counts.sum() == n  # never outside the top k
    sigma = np.sqrt(n * probs * (1 - probs))
    assert np.all(np.abs(counts - n * probs) < 5 * sigma + 1)


def test_bad_requests_are_clear_errors(fp32):
    engine = KgfactEngine(fp32)
    with pytest.raises(KgfactError, match="unique"):
        engine.generate([Request("a", "x", "y"), Request("a", "x", "z")], SamplingConfig())
    with pytest.raises(KgfactError, match="empty suffix"):
        engine.generate([Request("a", "x", "")], SamplingConfig())
    with pytest.raises(KgfactError, match="temperature"):
        SamplingConfig(temperature=0)


def test_a_leading_newline_does_not_end_the_answer(tiny_model_dir):
    """A model that starts its answer with a newline is not cut to an empty answer: the stop
    string applies after the leading whitespace."""
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32"))
    tok, request = loaded.tokenizer, Request("q", "", QUESTIONS[0])
    free_config = SamplingConfig(n_samples=0, max_new_tokens=8, stop=("@@",))
    first = KgfactEngine(loaded).generate([request], free_config)[0].greedy[0]
    # swap the output rows of that first character and the newline: the model now begins
    # its answer with a newline and goes on with what it would have said
    rows = [tok.convert_tokens_to_ids(c) for c in (first, "\n")]
    with torch.no_grad():
        loaded.model.lm_head.weight[rows] = loaded.model.lm_head.weight[rows[::-1]].clone()
    free = KgfactEngine(loaded).generate([request], free_config)[0].greedy
    assert free.startswith("\n") and free.strip()
    answer = KgfactEngine(loaded).generate([request], SamplingConfig(
        n_samples=3, temperature=1e-3, max_new_tokens=8))[0]
    assert answer.greedy == cut_at_stop(free, ("\n",)) and answer.greedy.strip()
    assert set(answer.samples) == {answer.greedy}  # samples follow the same rule


def test_cut_at_stop_skips_leading_whitespace():
    assert cut_at_stop("\nParis\nQ: next", ("\n",)) == "\nParis"
    assert cut_at_stop("  \n \n", ("\n",)) == "  \n \n"
    assert cut_at_stop(" Paris. Q", ("\n", ".")) == " Paris"


def test_the_engine_states_the_adapter_it_serves(fp32, tiny_model_dir, tmp_path):
    from tests.tinymodel import make_tiny_adapter

    assert KgfactEngine(fp32).adapter is None
    make_tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    (tmp_path / "x").mkdir()
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32",
                                    adapter=str(tmp_path / "x" / ".." / "adapter")))
    assert KgfactEngine(loaded).adapter == str((tmp_path / "adapter").resolve())
