"""SliCK: the category rules, scoring, exemplar sets, the stage on a run (resumable), and the
real Gemma model on a few questions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from kgfact.cli import main
from kgfact.errors import KgfactError
from kgfact.qa import QAConfig, build_qa
from kgfact.rundir import RunDir
from kgfact.sampling import SamplingConfig
from kgfact.prompts import STRATEGIES, StrategyContext
from kgfact.slick import (CATEGORIES, SlickConfig, build_requests, categorize, exemplar_sets,
                          run_slick, score, select_questions)
from tests import miniworld

SMALL = SlickConfig(sampling=SamplingConfig(n_samples=3, max_new_tokens=4),
                    max_questions_per_relation=3, splits=("train", "test"))


def test_category_rules_at_the_boundaries():
    greedy = [1.0, 0.9, 0.1, 0.0, 0.0, 0.0, 1.0]
    sample = [0.0, 0.0, 1.0, 1 / 160, 0.0, 1.0, 1.0]
    assert categorize(greedy, sample).tolist() == [
        "HighlyKnown", "MaybeKnown", "MaybeKnown", "WeaklyKnown", "Unknown", "WeaklyKnown",
        "HighlyKnown"]
    assert CATEGORIES == ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


def test_score_counts_exactly():
    questions = pd.DataFrame({
        "qid": ["a", "b", "c", "d"], "relation": "P17", "split": "test", "distribution": "id",
        "answer": ["Atlantis", "Lemuria", "Mythica", "Hyperborea"],
        "aliases": [["Republic of Atlantis"], [], [], []]})
    config = SlickConfig(n_prompts=2, sampling=SamplingConfig(n_samples=2))
    gens = {
        "a#0": (" atlantis", ("x", "y")), "a#1": ("Republic of Atlantis.", ("x", "y")),
        "b#0": ("Lemuria", ("x", "y")), "b#1": ("Atlantis", ("Lemuria", "y")),
        "c#0": ("no", ("x", "y")), "c#1": ("no", ("x", "the Mythica")),
        "d#0": ("no", ("x", "y")), "d#1": ("", ("", "Hyperborean")),
    }
    table = score(questions, gens, config)
    assert table["p_correct_greedy"].tolist() == [1.0, 0.5, 0.0, 0.0]
    assert table["p_correct_sample"].tolist() == [0.0, 0.25, 0.25, 0.0]
    assert table["category"].tolist() == ["HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"]
    # every answer pooled: 2 greedy + 4 samples per question
    assert table["p_correct"].tolist() == [2 / 6, 2 / 6, 1 / 6, 0.0]
    assert list(table.loc[1, "sample_answers"]) == ["x", "y", "Lemuria", "y"]
    assert list(table.loc[0, "greedy_correct"]) == [True, True]


@pytest.fixture(scope="module")
def mini_qa():
    qa, _ = build_qa(*miniworld.tables(), QAConfig(in_distribution=("P17", "P36", "P1376"),
                                                   out_of_distribution=("P30",)))
    return qa


def test_exemplar_sets_fixed_same_relation_from_dev_never_self(mini_qa):
    config = SlickConfig()
    sets, skipped = exemplar_sets(mini_qa, config, ["P17", "P36"])
    assert skipped == ["P36"]  # P36 has no dev questions to draw exemplars from
    by_qid = mini_qa.set_index("qid")
    assert set(by_qid.loc[sets["qid"], "split"]) == {"dev"}
    assert set(by_qid.loc[sets["qid"], "relation"]) == {"P17"}
    assert sets.groupby("prompt").size().tolist() == [5] * 10  # 4 shots + 1 spare each
    again, _ = exemplar_sets(mini_qa, config, ["P17"])
    assert again.equals(sets)
    dev = mini_qa[(mini_qa["relation"] == "P17") & (mini_qa["split"] == "dev")]
    requests = build_requests(dev, mini_qa, sets, config)
    assert len(requests) == 10 * len(dev)
    for r in requests:
        qid, p = r.key.split("#")
        question = by_qid.loc[qid, "question"]
        assert r.suffix == f"Q: {question}\nA:"
        assert f"Q: {question}\n" not in r.prefix  # never its own exemplar
        assert r.prefix.count("Q: ") == 4


def test_exemplar_split_cap_labels_a_sample_of_dev_only(mini_qa):
    full = SlickConfig(splits=("train", "dev"), relations=("P17",))
    capped = SlickConfig(splits=("train", "dev"), relations=("P17",),
                         max_exemplar_split_questions=3)
    everything, _, _ = select_questions(mini_qa, full)
    questions, _, sets = select_questions(mini_qa, capped)
    n = everything.groupby("split").size()
    assert n["dev"] > 3
    assert questions.groupby("split").size().to_dict() == {"dev": 3, "train": n["train"]}
    assert set(questions["qid"]) < set(everything["qid"])
    # SliCK's own exemplar sets still draw from the whole dev split
    assert sets.equals(exemplar_sets(mini_qa, full, ["P17"])[0])
    # evaluation's random exemplars come from the labelled dev questions
    labelled = questions[questions["split"] == "dev"]
    context = StrategyContext(mini_qa, pd.Series(True, index=labelled["qid"]))
    assert sorted(STRATEGIES.get("random")(context, "P17")["qid"]) == sorted(labelled["qid"])
    # a relation without labelled dev questions keeps all of them
    dev_p1376 = mini_qa[(mini_qa["relation"] == "P1376") & (mini_qa["split"] == "dev")]
    assert len(STRATEGIES.get("random")(context, "P1376")) == len(dev_p1376)


def make_run(path, qa) -> RunDir:
    """A run directory whose build stage produced ``qa``."""
    run = RunDir(path)
    with run.stage("build", {"source": "miniworld"}):
        run.write_table("qa", qa)
    return run


@pytest.fixture
def mini_run(tmp_path, mini_qa):
    return make_run(tmp_path / "run", mini_qa)


def test_run_slick_writes_every_answer(mini_run, tiny_model_dir):
    from kgfact.models import ModelConfig

    table = run_slick(mini_run, SMALL, ModelConfig(name=str(tiny_model_dir)), progress=False)
    assert set(table["relation"]) == {"P17"}  # the others have too few dev questions
    assert len(table) == 6 and set(table["split"]) == {"train", "test"}
    assert all(len(a) == 10 for a in table["greedy_answers"])
    assert all(len(a) == 30 for a in table["sample_answers"])
    assert set(table["category"]) <= set(CATEGORIES)
    stage = mini_run.manifest()["stages"]["slick"]
    assert stage["status"] == "complete" and stage["report"]["skipped_relations"] == [
        "P1376", "P30", "P36"]
    assert mini_run.read_table("slick").equals(table)
    assert len(mini_run.read_table("slick_exemplars")) == 50
    # every record checked for a guess, with the relation's baselines beside
    from kgfact.guessing import flag_guesses, prior_baselines

    qa = mini_run.read_table("qa")
    pd.testing.assert_frame_equal(table, flag_guesses(table.drop(columns=["guess", "guess_kind"]),
                                                      qa))
    pd.testing.assert_frame_equal(mini_run.read_table("guess_baselines"),
                                  prior_baselines(qa, table))
    # a different configuration does not silently overwrite
    with pytest.raises(KgfactError, match="another configuration"):
        run_slick(mini_run, SlickConfig(max_questions_per_relation=2),
                  ModelConfig(name=str(tiny_model_dir)), progress=False)


def test_killed_slick_resumes_to_the_same_table(tmp_path, mini_qa, tiny_model_dir):
    args = ["slick", "--model", str(tiny_model_dir), "--samples", "4", "--max-new-tokens", "6",
            "--splits", "train,dev,test", "--max-questions", "8", "--chunk", "2", "--quiet"]
    runs = {name: make_run(tmp_path / name, mini_qa) for name in ("whole", "killed")}
    assert main([*args[:1], str(runs["whole"].path), *args[1:]]) == 0

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kgfact.cli", args[0],
                             str(runs["killed"].path), *args[1:]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = runs["killed"].path / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(checkpoints.rglob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(checkpoints.rglob("part-*.parquet")))
    assert 2 <= done_before < 8  # killed mid-run, with some chunks kept
    assert runs["killed"].stage_status("slick") == "running"
    assert main([*args[:1], str(runs["killed"].path), *args[1:]]) == 0
    pd.testing.assert_frame_equal(runs["killed"].read_table("slick"),
                                  runs["whole"].read_table("slick"))


def test_slick_refuses_a_backend_that_does_not_serve_the_models_adapter(mini_run, tmp_path,
                                                                        tiny_model_dir):
    """SliCK of an adapted model on a backend instance of the bare model would categorise
    the bare model's knowledge under the adapter's name."""
    from kgfact.models import ModelConfig, load_model
    from kgfact.sampling import KgfactEngine
    from tests.tinymodel import make_tiny_adapter

    adapter = make_tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    bare = KgfactEngine(load_model(ModelConfig(name=str(tiny_model_dir))))
    model = ModelConfig(name=str(tiny_model_dir), adapter=str(adapter))
    with pytest.raises(KgfactError) as error:
        run_slick(mini_run, SMALL, model, backend=bare, progress=False)
    assert str(error.value) == (f"backend KgfactEngine serves the bare model but "
                                f"'{tiny_model_dir}' needs {adapter.resolve()}; give the backend "
                                "by name so one is started per model")
    assert not mini_run.has_table("slick")


def test_slick_cli_errors(tmp_path, mini_run, capsys):
    assert main(["slick", str(tmp_path / "nope")]) == 2
    assert "is not a kgfact run" in capsys.readouterr().err
    assert main(["slick", str(mini_run.path), "--relations", "P50"]) == 2
    assert "has no questions for P50" in capsys.readouterr().err
    assert main(["slick", str(mini_run.path), "--relations", "P36"]) == 2
    assert "too few dev questions" in capsys.readouterr().err


@pytest.mark.slow
def test_real_gemma_greedy_matches_generate_and_knows_tokyo():
    """Gemma 3 270M on real GeoNames facts: the engine's greedy answers equal a plain
    ``generate`` loop in fp32, and 'capital of Japan' comes out HighlyKnown."""
    import torch

    from kgfact.data.offline import build_offline_dataset
    from kgfact.models import ModelConfig, load_model
    from kgfact.sampling import KgfactEngine

    data = build_offline_dataset()
    qa, _ = build_qa(data.triples, data.entities, QAConfig(in_distribution=("P36",)))
    japan = qa[qa["question"] == "What is the capital city of Japan?"]
    others = qa[(qa["split"] == "test") & (qa["qid"] != japan["qid"].iloc[0])].head(2)
    config = SlickConfig(sampling=SamplingConfig(n_samples=4))
    sets, _ = exemplar_sets(qa, config, ["P36"])
    questions = pd.concat([japan, others])
    requests = build_requests(questions, qa, sets, config)

    loaded = load_model(ModelConfig(dtype="float32"))
    got = KgfactEngine(loaded).generate(requests[:12], SamplingConfig(n_samples=0))
    tok = loaded.tokenizer
    for request, generation in zip(requests[:12], got):
        ids = tok(request.prefix)["input_ids"] + tok(request.suffix,
                                                     add_special_tokens=False)["input_ids"]
        out = loaded.model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False,
                                    top_k=None, top_p=None)
        want = tok.decode(out[0][len(ids):], skip_special_tokens=True).split("\n")[0]
        assert generation.greedy == want

    engine = KgfactEngine(load_model())  # the default device and dtype (bf16 here)
    gens = engine.generate(requests[:10], SamplingConfig())
    table = score(japan, {g.key: (g.greedy, g.samples) for g in gens}, SlickConfig())
    assert table["category"].iloc[0] == "HighlyKnown"
    assert np.mean([a.strip() == "Tokyo" for a in table["greedy_answers"].iloc[0]]) == 1.0
