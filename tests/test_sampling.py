"""The sampling engine on a tiny random model: greedy equals a plain generate loop, batch size
changes nothing, prefixes are computed once, sequences stop and retire, samples follow the
model's distribution with distinct reproducible seeds."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("clean_up", [False, True])
def test_stop_candidates_hold_every_token_text(clean_up):
    """The fast per-token texts the stop test starts from hold each token's ``batch_decode``
    text, also where the space clean-up joins text ("a ." becomes "a.")."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from kgfact.sampling.engine import _token_texts

    vocab = {"<unk>": 0, "a .": 1, "\n": 2, "b": 3, " 's": 4}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "<unk>")),
                                  clean_up_tokenization_spaces=clean_up)
    texts = _token_texts(tok)
    expected = tok.batch_decode([[i] for i in range(len(vocab))])
    assert ("a." in expected[1]) is clean_up
    assert all(e in t for e, t in zip(expected, texts, strict=True))


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


def mixed_requests() -> list[Request]:
    """Prompts of many prefix and suffix lengths, an empty prefix among them, and two prefixes
    of equal length (so one packed group holds two prefixes)."""
    prefixes = PREFIXES + ["", "Q: What is the capital city of Atlantis?\nA: Town 9\n\n"
                           "Q: Where?\nA: Here\n\n"]
    questions = QUESTIONS + ["Q: X?\nA:", "Q: Which region is Town 3 in?\nA:"]
    return [Request(f"q{i}#{p}", prefix, q) for i, q in enumerate(questions)
            for p, prefix in enumerate(prefixes)]


@pytest.mark.parametrize("config", [SamplingConfig(n_samples=0, max_new_tokens=12),
                                    SamplingConfig(n_samples=5, temperature=1.0,
                                                   max_new_tokens=8)])
def test_packed_batches_answer_exactly_as_buckets(bf16, config):
    """Prompts of any prefixes and suffix lengths decoded together give, greedy answers and
    samples alike, what buckets of one prefix and one suffix length give, in far fewer
    forwards: each distinct prefix once, one prefill, then one forward per decoding step."""
    requests = mixed_requests()
    buckets = KgfactEngine(bf16, packing="bucket")
    want = buckets.generate(requests, config)
    packed = KgfactEngine(bf16)
    assert packed.generate(requests, config) == want
    # a character-level model: some answer runs to the token limit, so decoding took
    # max_new_tokens - 1 forwards after the prefill (and the 4 distinct prefixes, BOS alone
    # for the empty one, one forward each)
    assert max(len(a) for g in want for a in (g.greedy, *g.samples)) == config.max_new_tokens
    assert packed.stats["forwards"] == 4 + 1 + config.max_new_tokens - 1
    assert packed.stats["prefill_tokens"] == buckets.stats["prefill_tokens"]
    assert buckets.stats["forwards"] > 3 * packed.stats["forwards"]
    # and in batches of a few prompts, whatever they are grouped with
    assert KgfactEngine(bf16, max_rows=30).generate(requests, config) == want


def test_an_engine_switches_adapters_as_engines_started_on_them(tiny_model_dir, tmp_path):
    """One loaded base model serving one adapter after another answers as an engine started
    on each (its cached prefixes, computed under the previous adapter, are not reused), and
    states the adapter it serves."""
    from tests.tinymodel import make_tiny_adapter

    adapters = [str(make_tiny_adapter(tiny_model_dir, tmp_path / f"a{s}", seed=s))
                for s in (1, 2)]
    config = SamplingConfig(n_samples=2, temperature=1.0, max_new_tokens=6)
    engine = KgfactEngine(load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32")))
    answers = []
    for adapter in [None, *adapters, None, adapters[0]]:
        engine.use_adapter(adapter)
        assert engine.adapter == (None if adapter is None else str(Path(adapter).resolve()))
        fresh = KgfactEngine(load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32",
                                                    adapter=adapter)))
        answers.append(engine.generate(requests(), config))
        assert answers[-1] == fresh.generate(requests(), config)
    assert len({tuple(g.greedy for g in a) for a in answers}) == 3


def test_sequences_reaching_a_sliding_window_are_bucketed(tiny_model_dir, tmp_path):
    """A Gemma 3 model with a sliding window of 24 tokens: prompts that with their answer
    reach it are answered in buckets (where the model's own cache and masks apply), the
    others packed, and every answer is the buckets' one."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=24,
        layer_types=["sliding_attention", "full_attention"], bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    with torch.no_grad():
        model.lm_head.weight.mul_(50)
    model.save_pretrained(tmp_path / "gemma", safe_serialization=True)
    tok.save_pretrained(tmp_path / "gemma")
    loaded = load_model(ModelConfig(name=str(tmp_path / "gemma"), dtype="float32"))
    short = [Request(f"s{i}", "", q) for i, q in enumerate(["Q: X?\nA:", "Q: Yz?\nA:"])]
    config = SamplingConfig(n_samples=0, max_new_tokens=12)
    mixed = short + requests()  # these are 30 tokens and more: past the window
    engine = KgfactEngine(loaded)
    assert engine.generate(mixed, config) == KgfactEngine(
        loaded, packing="bucket").generate(mixed, config)
    # the long prompts alone, bucketed: 2 prefixes, then one bucket per (prefix, length)
    alone = KgfactEngine(loaded)
    alone.generate(mixed[2:], config)
    assert engine.stats["forwards"] == alone.stats["forwards"] + 1 + 1 + 11  # + BOS, packed
