"""LoRA fine-tuning on the tiny model: answer-only loss, checkpoints, dynamics, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kgfact.contract import adapter_dir
from kgfact.errors import KgfactError
from kgfact.finetune import (FinetuneConfig, LoraSettings, _dynamics_row, batches, collate,
                             encode, finetune, greedy_answers, set_data, token_losses)
from kgfact.models import ModelConfig, load_model
from kgfact.sampling import KgfactEngine
from tests import ftworld

FAST = FinetuneConfig(sets=("ft-known", "ft-unknown"), learning_rate=3e-3, max_epochs=3,
                      batch_size=4, eval_questions=3, lora=LoraSettings(r=4, alpha=8))


@pytest.fixture
def fp32(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32"))


@pytest.fixture
def run(tmp_path):
    return ftworld.make_ft_run(tmp_path / "run")


def test_loss_is_on_answer_tokens_only(fp32):
    tok = fp32.tokenizer
    examples = [encode(tok, "Which country is Town 1 in?", "Lemuria"),
                encode(tok, "Where?", "Atlantis")]
    assert tok.decode(examples[1].ids[-examples[1].answer_len:]) == " Atlantis\n"
    batch = collate(examples, tok.pad_token_id, fp32.device)
    ids, mask, _, targets, target_mask, keep = batch
    assert keep == len(" Atlantis\n") + 1
    assert mask[1].sum() == len(examples[1].ids) and mask[1, 0] == 0  # left padded
    assert tok.decode(targets[0][target_mask[0]]) == " Lemuria\n"
    assert tok.decode(targets[1][target_mask[1]]) == " Atlantis\n"
    with torch.no_grad():
        ours = token_losses(fp32.model, batch).mean()
        # the reference: full logits, HF's own loss with the prompt labels masked, per example
        per_example = []
        for e in examples:
            x = torch.tensor([e.ids])
            labels = x.clone()
            labels[0, :len(e.ids) - e.answer_len] = -100
            out = fp32.model(input_ids=x, labels=labels)
            per_example.append((out.loss * e.answer_len).item())
    want = sum(per_example) / sum(e.answer_len for e in examples)
    assert ours.item() == pytest.approx(want, rel=1e-5)
    # changing the question changes the prediction context but masks nothing new
    assert target_mask.sum() == sum(e.answer_len for e in examples)


def test_batches_are_seeded_and_random_not_one_relation_each(fp32):
    """Examples of two templates (two relations, two lengths): length-bucketed batches would
    each hold one of them; random batches mix them."""
    tok = fp32.tokenizer
    examples = [encode(tok, "Which country?" if i % 2 else "Which region is it in?", "a")
                for i in range(40)]
    first = batches(examples, 8, seed=0, epoch=1)
    assert first == batches(examples, 8, seed=0, epoch=1)
    assert first != batches(examples, 8, seed=0, epoch=2)
    assert sorted(i for b in first for i in b) == list(range(40))
    assert [len(b) for b in first] == [8] * 5
    assert sum(len({i % 2 for i in b}) == 2 for b in first) >= 4  # mixed batches


def _adapter(run, name, checkpoint, seed=0):
    from safetensors.torch import load_file

    return load_file(str(adapter_dir(run, name, checkpoint, seed)
                         / "adapter_model.safetensors"))


def test_dynamics_checkpoints_and_adapter_round_trip(run, tiny_model_dir):
    from dataclasses import replace

    model = ModelConfig(name=str(tiny_model_dir), dtype="float32")
    finetune(run, replace(FAST, sets=("ft-unknown",)), model, progress=False)
    alone = finetune(run, replace(FAST, sets=("ft-known",)), model, progress=False)
    assert set(alone["set"]) == {"ft-known"}
    dynamics = run.read_table("dynamics")  # every set trained in the run, call after call
    assert sorted(dynamics["set"].unique()) == ["ft-known", "ft-unknown"]
    for name, d in dynamics.groupby("set"):
        assert d["epoch"].tolist() == [0, 1, 2, 3]
        assert d["n_known"].iloc[0] + d["n_unknown"].iloc[0] == 6
        trained = d[d["epoch"] >= 1]
        best = trained.loc[trained["dev_accuracy"].idxmax(), "epoch"]
        assert d.loc[d["early_stop"], "epoch"].tolist() == [best]
        assert d.loc[d["convergence"], "epoch"].tolist() == [3]
        assert np.isfinite(trained["loss"]).all() and trained["loss"].iloc[-1] < trained[
            "loss"].iloc[0]
        assert d["n_known_fit"].le(d["n_known"]).all()
        assert d["memorised_rate"].between(0, 1).all()
        # each test question's correctness, the same questions every epoch, averaging to
        # test_accuracy (the table as written, through resumable state and parquet)
        assert d["test_qids"].nunique() == 1 and len(json.loads(d["test_qids"].iloc[0])) == 6
        assert d["test_correct"].map(lambda s: s.count("1") / len(s)).tolist() == d[
            "test_accuracy"].tolist()
        # the 3-epoch limit ended training: flagged exactly when the set was not yet fitted
        assert d["epoch_limit"].tolist() == [False] * 3 + [bool(d["train_fit"].iloc[-1] < 1)]
    known = dynamics[dynamics["set"] == "ft-known"]
    assert (known["n_unknown"] == 0).all() and known["fit_Unknown"].isna().all()

    # the saved CONVERGENCE adapter answers exactly as the model it was saved from
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32",
                                    adapter=str(adapter_dir(run, "ft-unknown", "convergence"))))
    train = run.read_table("ftsets/ft-unknown")
    answers = greedy_answers(KgfactEngine(loaded), train["question"].tolist())
    fit = np.mean([a == b for a, b in zip(answers, train["answer"])])
    assert fit == dynamics[dynamics["set"] == "ft-unknown"]["train_fit"].iloc[-1]
    base = load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32"))
    ids = torch.tensor([list(base.tokenizer("Q: Which country is Town 3 in?\nA:")["input_ids"])])
    with torch.no_grad():
        assert not torch.equal(loaded.model(ids).logits, base.model(ids).logits)


def test_dynamics_row_records_each_test_question(run, fp32):
    """``test_correct`` holds each test question's correctness in the order of ``test_qids``.
    Every other question's gold answer is made the model's own answer, so the record is no
    constant."""
    engine = KgfactEngine(fp32)
    train, dev, test = set_data(run, "ft-known", FAST)
    right = np.arange(len(test)) % 2 == 0
    answers = greedy_answers(engine, test["question"].tolist())
    test = test.assign(answer=np.where(right, answers, "no town answers this"),
                       aliases=[[] for _ in right])
    row = _dynamics_row(engine, train, dev, test, 1, 0.5, 0.0)
    assert json.loads(row["test_qids"]) == test["qid"].tolist()
    assert len(test) == 6  # 3 questions of each of the set's 2 relations
    assert row["test_correct"] == "101010"
    assert row["test_accuracy"] == 0.5


def test_convergence_stops_once_the_set_is_fitted(run, tiny_model_dir):
    config = FinetuneConfig(sets=("ft-known",), learning_rate=3e-3, max_epochs=40,
                            batch_size=2, convergence_fit=1.0, eval_questions=2,
                            lora=LoraSettings(r=8, alpha=16))
    dynamics = finetune(run, config, ModelConfig(name=str(tiny_model_dir)), progress=False)
    assert dynamics["train_fit"].iloc[-1] == 1.0
    assert (dynamics["train_fit"].iloc[:-1] < 1.0).all()  # stopped at the first fitted epoch
    assert dynamics["epoch"].iloc[-1] < 40 and not dynamics["epoch_limit"].any()


def test_every_seed_trains_its_own_adapters_and_evaluation_keeps_the_seed(run, tiny_model_dir):
    from dataclasses import replace

    from kgfact.evaluate import EvalConfig, evaluate

    model = ModelConfig(name=str(tiny_model_dir), dtype="float32")
    finetune(run, replace(FAST, seeds=(0, 1)), model, progress=False)
    dynamics = run.read_table("dynamics")
    assert sorted(map(tuple, dynamics[["set", "seed"]].drop_duplicates().to_numpy().tolist())
                  ) == [("ft-known", 0), ("ft-known", 1), ("ft-unknown", 0), ("ft-unknown", 1)]
    # same set and data, another seed: another batch order and init, so other weights and
    # (the untrained epoch 0 aside) other dynamics; the same dev and test questions
    a, b = (_adapter(run, "ft-known", "convergence", seed) for seed in (0, 1))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    known = dynamics[dynamics["set"] == "ft-known"].set_index(["seed", "epoch"])["loss"]
    assert known.loc[0].iloc[1:].tolist() != known.loc[1].iloc[1:].tolist()
    # a second call with a third seed trains only that seed
    finetune(run, replace(FAST, seeds=(2,)), model, progress=False)
    assert sorted(run.read_table("dynamics")["seed"].unique()) == [0, 1, 2]
    evaluate(run, EvalConfig(modes=("zero-shot",), bootstrap=20), model, progress=False)
    predictions = run.read_table("predictions")
    adapters = predictions[predictions["set"].notna()]
    assert sorted(adapters["model"].unique())[:2] == ["ft-known@convergence/seed-0",
                                                      "ft-known@convergence/seed-1"]
    assert sorted(adapters["seed"].unique()) == [0, 1, 2]
    assert predictions.loc[predictions["set"].isna(), "seed"].isna().all()
    assert (run.read_table("gap")["n_seeds"] == 3).all()
    accuracy = run.read_table("accuracy")
    assert set(accuracy["seed"].dropna()) == {0, 1, 2}


def test_the_learning_rate_grid_picks_the_best_dev_accuracy_and_trains_with_it(
        run, tiny_model_dir):
    from dataclasses import replace

    model = ModelConfig(name=str(tiny_model_dir), dtype="float32")
    config = replace(FAST, learning_rate_grid=(3e-3, 1e-5), grid_set="ft-known", max_epochs=2)
    finetune(run, config, model, progress=False)
    grid = run.read_table("lr_grid")
    assert grid["learning_rate"].tolist() == [1e-5, 3e-3] and grid["chosen"].sum() == 1
    best = grid.sort_values(["dev_accuracy", "learning_rate"], ascending=[False, True]).iloc[0]
    chosen = grid.loc[grid["chosen"]].iloc[0]
    assert chosen["learning_rate"] == best["learning_rate"]
    assert grid["early_stop_epoch"].between(1, 2).all() and (grid["epochs"] == 2).all()
    report = run.manifest()["stages"]["finetune"]["report"]
    assert report["learning_rate"] == chosen["learning_rate"]
    # the chosen trial is ft-known's training under seed 0, kept rather than repeated
    trial = run.path / "lr_grid" / f"lr-{chosen['learning_rate']:g}" / "convergence"
    from safetensors.torch import load_file

    a = load_file(str(trial / "adapter_model.safetensors"))
    b = _adapter(run, "ft-known", "convergence")
    assert all(torch.equal(a[k], b[k]) for k in a)
    dynamics = run.read_table("dynamics")
    assert sorted(dynamics["set"].unique()) == ["ft-known", "ft-unknown"]


def plain_peft_training(loaded, examples, lora, seed, lr, batch_size, epochs):
    """The reference: one peft adapter trained alone, batches right-padded and the loss the
    model's own (labels -100 off the answer), with kgfact's batch order; returns the adapter
    and the loss of every step."""
    from peft import get_peft_model_state_dict

    from kgfact.finetune import with_lora

    model = with_lora(loaded.model, lora, seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=0.0)
    pad, losses = loaded.tokenizer.pad_token_id, []
    model.train()
    for epoch in range(1, epochs + 1):
        for batch in batches(examples, batch_size, seed, epoch):
            rows = [examples[i] for i in batch]
            width = max(len(e.ids) for e in rows)
            ids = torch.tensor([list(e.ids) + [pad] * (width - len(e.ids)) for e in rows])
            mask = torch.tensor([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in rows])
            labels = torch.tensor([[-100] * (len(e.ids) - e.answer_len)
                                   + list(e.ids[-e.answer_len:]) + [-100] * (width - len(e.ids))
                                   for e in rows])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    state = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    model.unload()
    return state, losses


def test_adapters_trained_together_are_those_peft_trains_alone(fp32, run):
    """Three trainings (two sets of different sizes, two seeds, two learning rates) stepped
    together in one pass end where each plain peft training ends alone, step by step."""
    from kgfact.finetune import GroupTrainer

    tok, lora = fp32.tokenizer, LoraSettings(r=4, alpha=8)
    sets = {name: [encode(tok, q, a) for q, a in zip(t["question"], t["answer"])]
            for name in ("ft-known", "ft-unknown")
            for t in [run.read_table(f"ftsets/{name}")]}
    sets["ft-unknown"] = sets["ft-unknown"][:5]  # a last batch of 1 beside batches of 2
    jobs = [("ft-known", 0, 3e-3), ("ft-known", 1, 1e-3), ("ft-unknown", 0, 3e-3)]
    trainer = GroupTrainer(fp32, lora, [s for _, s, _ in jobs], [r for _, _, r in jobs])
    steps: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for epoch in (1, 2):
        trainer.epoch({k: sets[name] for k, (name, _, _) in enumerate(jobs)},
                      {k: epoch for k in range(3)}, 2,
                      lambda k, step, size, loss: steps[k].append(loss))
    together = [dict(trainer.group.state_dict(k)) for k in range(3)]
    trainer.close()
    for k, (name, seed, rate) in enumerate(jobs):
        alone, losses = plain_peft_training(fp32, sets[name], lora, seed, rate, 2, 2)
        assert len(steps[k]) == len(losses) == 2 * -(-len(sets[name]) // 2)
        np.testing.assert_allclose(steps[k], losses, rtol=1e-4)
        assert together[k].keys() == alone.keys()
        for key in alone:
            torch.testing.assert_close(together[k][key], alone[key], rtol=1e-4, atol=1e-6)
    # the adapters did train, and apart: seeds and rates gave different weights
    assert not torch.equal(together[0][key], together[1][key])
    assert float(together[0][key].abs().max()) > 0


class Interrupt(Exception):
    pass


def test_interrupted_training_resumes_to_identical_adapters(tmp_path, tiny_model_dir):
    model = ModelConfig(name=str(tiny_model_dir), dtype="float32")
    runs = {}
    for name in ("whole", "killed"):
        runs[name] = ftworld.make_ft_run(tmp_path / name)
    whole = finetune(runs["whole"], FAST, model, progress=False)

    def crash(epoch, step):
        if epoch == 2 and step == 0:  # mid-epoch: one of two optimizer steps done
            raise Interrupt
    with pytest.raises(Interrupt):
        finetune(runs["killed"], FAST, model, progress=False, on_step=crash)
    assert runs["killed"].stage_status("finetune") == "failed"
    resumed = finetune(runs["killed"], FAST, model, progress=False)
    pd.testing.assert_frame_equal(whole.drop(columns="seconds"),
                                  resumed.drop(columns="seconds"))
    for name in FAST.sets:
        for checkpoint in ("early_stop", "convergence"):
            a, b = _adapter(runs["whole"], name, checkpoint), _adapter(runs["killed"], name,
                                                                       checkpoint)
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_errors(run, tiny_model_dir):
    with pytest.raises(KgfactError, match="no fine-tuning set 'mix-50'"):
        finetune(run, FinetuneConfig(sets=("mix-50",)), ModelConfig(name=str(tiny_model_dir)),
                 progress=False)
    with pytest.raises(KgfactError, match="convergence_fit"):
        FinetuneConfig(convergence_fit=0)


def test_killed_finetune_process_resumes_to_identical_adapters(tmp_path, tiny_model_dir):
    import os
    import signal
    import subprocess
    import sys
    import time

    from kgfact.cli import main

    args = ["--model", str(tiny_model_dir), "--dtype", "float32", "--epochs", "3",
            "--lr", "3e-3", "--batch-size", "4", "--eval-questions", "3", "--lora-r", "4",
            "--lora-alpha", "8", "--quiet"]
    runs = {}
    for name in ("whole", "killed"):
        runs[name] = ftworld.make_ft_run(tmp_path / name)
    assert main(["finetune", str(runs["whole"].path), *args]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kgfact.cli", "finetune",
                             str(runs["killed"].path), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = runs["killed"].path / "adapters" / "ft-known" / "seed-0" / "state" / "trainer.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not state.exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert runs["killed"].stage_status("finetune") == "running"  # killed mid-run
    assert main(["finetune", str(runs["killed"].path), *args]) == 0
    for name in ("ft-known", "ft-unknown"):
        for checkpoint in ("early_stop", "convergence"):
            a = _adapter(runs["whole"], name, checkpoint)
            b = _adapter(runs["killed"], name, checkpoint)
            assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(runs["whole"].read_table("dynamics").drop(columns="seconds"),
                                  runs["killed"].read_table("dynamics").drop(columns="seconds"))


@pytest.mark.slow
def test_real_gemma_learns_capitals_with_lora(tmp_path):
    """Gemma 3 270M, a LoRA adapter on 8 real capital questions: the answer loss falls, and the
    adapter loaded back from disk gives the same greedy answers as the trained model."""
    from kgfact.data.offline import build_offline_dataset
    from kgfact.finetune import GroupTrainer
    from kgfact.qa import QAConfig, build_qa

    data = build_offline_dataset()
    qa, _ = build_qa(data.triples, data.entities, QAConfig(in_distribution=("P36",)))
    train = qa[qa["split"] == "train"].sort_values("qid").head(8)
    loaded = load_model()
    examples = [encode(loaded.tokenizer, q, a) for q, a in zip(train["question"],
                                                               train["answer"])]
    trainer = GroupTrainer(loaded, LoraSettings(), [0], [1e-3])
    losses = [trainer.epoch({0: examples}, {0: epoch}, 4)[0] for epoch in (1, 2, 3)]
    assert losses[-1] < losses[0]
    questions = train["question"].tolist()
    trained = greedy_answers(trainer.engine(0), questions)
    trainer.group.save(0, tmp_path / "adapter")
    trainer.close()
    again = load_model(ModelConfig(adapter=str(tmp_path / "adapter")))
    assert greedy_answers(KgfactEngine(again), questions) == trained
