"""A tokenizer without a BOS token (Qwen2.5's kind): zero-shot prompts have an empty prefix, and
SliCK, fine-tuning and evaluation all run on such a model."""

from __future__ import annotations

import pytest

from kgfact.evaluate import EvalConfig, evaluate
from kgfact.finetune import FinetuneConfig, LoraSettings, finetune
from kgfact.models import ModelConfig, load_model
from kgfact.sampling import KgfactEngine, Request, SamplingConfig
from kgfact.slick import SlickConfig, run_slick
from tests import ftworld


@pytest.fixture(scope="module")
def qwen(tiny_qwen_dir):
    return ModelConfig(name=str(tiny_qwen_dir), dtype="float32")


def test_the_tokenizer_really_has_no_bos(qwen):
    tok = load_model(qwen).tokenizer
    assert tok.bos_token is None and tok("")["input_ids"] == []


def test_empty_prefix_answers_like_the_prompt_alone(qwen):
    engine = KgfactEngine(load_model(qwen))
    config = SamplingConfig(n_samples=2, max_new_tokens=5, stop=("@@",))
    zero = engine.generate([Request("a", "", "Q: Which country is Town 4 in?\nA:")], config)[0]
    # the same text split differently: the prompt as prefix of one character
    split = engine.generate([Request("a", "Q", ": Which country is Town 4 in?\nA:")], config)[0]
    assert zero.greedy == split.greedy and len(zero.greedy) == 5
    assert engine.stats["prefix_tokens"] == 1  # the empty prefix was never run or cached


def test_slick_finetune_and_evaluate_on_a_bosless_model(tmp_path, qwen):
    run = ftworld.make_ft_run(tmp_path / "run")
    slick = run_slick(run, SlickConfig(sampling=SamplingConfig(n_samples=2, max_new_tokens=4),
                                       shots=2, n_prompts=2, max_questions_per_relation=2,
                                       splits=("test",)),
                      qwen, progress=False, force=True)
    assert len(slick) == 4 and all(len(a) == 2 for a in slick["greedy_answers"])
    config = FinetuneConfig(sets=("ft-known",), max_epochs=1, batch_size=4, eval_questions=2,
                            lora=LoraSettings(r=4, alpha=8))
    dynamics = finetune(run, config, qwen, progress=False)
    assert dynamics["epoch"].tolist() == [0, 1]
    assert dynamics["dev_accuracy"].notna().all()  # the per-epoch zero-shot checks ran
    accuracy = evaluate(run, EvalConfig(sets=("ft-known",), modes=("zero-shot", "few-shot"),
                                        n_prompts=1, shots=2, max_questions_per_relation=2,
                                        bootstrap=10),
                        qwen, progress=False)
    models = set(accuracy["model"])
    assert models == {"base", "ft-known@early_stop/seed-0", "ft-known@convergence/seed-0"}
    assert len(run.read_table("predictions")) == 3 * 2 * 4  # models x modes x queries
