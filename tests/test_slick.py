"""SliCK: the category rules, scoring, exemplar sets, the stage on a run (resumable), and the
real Gemma model on a few questions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgfact.cli import main
from kgfact.contract import CATEGORIES
from kgfact.errors import KgfactError
from kgfact.qa import QAConfig, build_qa
from kgfact.rundir import RunDir
from kgfact.sampling import SamplingConfig
from kgfact.prompts import STRATEGIES, StrategyContext
from kgfact.slick import (SlickConfig, build_requests, categorize, exemplar_sets, run_slick,
                          score, select_questions)
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
    # another protocol does not silently overwrite
    with pytest.raises(KgfactError) as error:
        run_slick(mini_run, SlickConfig(max_questions_per_relation=2),
                  ModelConfig(name=str(tiny_model_dir)), progress=False)
    assert str(error.value) == (
        f"{mini_run.path} already has SliCK results under another protocol "
        "(slick.sampling.max_new_tokens 4 -> 16; slick.sampling.n_samples 3 -> 16); use --force "
        "to replace them")


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


@settings(max_examples=40, deadline=None)
@given(caps=st.lists(st.one_of(st.none(), st.integers(1, 7)), min_size=4, max_size=4))
def test_a_larger_cap_selects_a_superset(mini_qa, caps):
    """Each (relation, split) keeps the first questions of one seeded order, so raising either
    cap only adds questions: what lets a run grow to the table of one bigger call."""
    def config(max_q, max_ex):
        return SlickConfig(n_prompts=1, splits=("train", "dev", "test"), relations=("P17",),
                           max_questions_per_relation=max_q, max_exemplar_split_questions=max_ex)

    def larger(a, b):
        return None if a is None or b is None else max(a, b)

    def smaller(a, b):
        return b if a is None else a if b is None else min(a, b)

    small = select_questions(mini_qa, config(smaller(*caps[:2]), smaller(*caps[2:])))[0]
    large = select_questions(mini_qa, config(larger(*caps[:2]), larger(*caps[2:])))[0]
    assert set(small["qid"]) <= set(large["qid"])


def test_a_larger_question_cap_keeps_the_exemplar_split_sample(mini_qa):
    """The case that was not a superset: with dev under both caps, raising
    max_questions_per_relation used to draw another dev sample."""
    picked = [set(select_questions(mini_qa, SlickConfig(
        splits=("dev",), max_questions_per_relation=n, max_exemplar_split_questions=2))[0]["qid"])
        for n in (3, 4, 5, 6)]
    assert all(p == picked[0] for p in picked) and len(picked[0]) == 2


def two_relations(qa: pd.DataFrame) -> pd.DataFrame:
    """``qa`` plus a copy of its P17 questions under a second relation (P495), so two relations
    have enough dev questions for exemplars."""
    p17 = qa[qa["relation"] == "P17"]
    return pd.concat([qa, p17.assign(relation="P495", qid="P495/" + p17["subject"])],
                     ignore_index=True)


def test_slick_grows_a_run_to_the_table_of_one_call(tmp_path, mini_qa, tiny_model_dir):
    from kgfact.models import ModelConfig

    qa, model = two_relations(mini_qa), ModelConfig(name=str(tiny_model_dir))
    protocol = dict(n_prompts=3, sampling=SamplingConfig(n_samples=2, max_new_tokens=4),
                    splits=("train", "dev"), max_exemplar_split_questions=2)
    grown, whole = make_run(tmp_path / "grown", qa), make_run(tmp_path / "whole", qa)
    first = SlickConfig(**protocol, relations=("P17",), max_questions_per_relation=3)
    run_slick(grown, first, model, progress=False)
    assert len(grown.read_table("slick")) == 3 + 2
    both = SlickConfig(**protocol, relations=("P495", "P17"), max_questions_per_relation=4)
    run_slick(grown, both, model, chunk_size=3, progress=False)
    run_slick(whole, replace(both, relations=("P17", "P495")), model, progress=False)
    for name in ("slick", "slick_exemplars", "guess_baselines"):
        pd.testing.assert_frame_equal(grown.read_table(name), whole.read_table(name))
    assert len(whole.read_table("slick")) == 2 * (4 + 2)
    stage = grown.manifest()["stages"]["slick"]
    # only the 7 new questions were labelled: 3 prompts x (greedy + 2 samples) each
    assert (stage["report"]["added"], stage["report"]["generations"]) == (7, 7 * 3 * 3)
    assert [s["relations"] for s in stage["selections"]] == [["P17"], ["P495", "P17"]]
    # a selection the table already holds labels nothing
    before = grown.read_table("slick")
    assert run_slick(grown, first, model, progress=False).equals(before)
    assert grown.manifest()["stages"]["slick"]["config"]["slick"]["relations"] == ["P495", "P17"]
    # another protocol is refused, naming what changed
    with pytest.raises(KgfactError) as error:
        run_slick(grown, replace(both, protocol="lazy", n_prompts=2), model, progress=False)
    assert str(error.value) == (f"{grown.path} already has SliCK results under another protocol "
                                "(slick.n_prompts 3 -> 2; slick.protocol 'full' -> 'lazy'); use "
                                "--force to replace them")


def test_lazy_slick_gives_the_full_categories_from_fewer_answers(tmp_path, mini_qa,
                                                                 tiny_model_dir):
    """Greedy alone decides the questions it answers right under some prompt; the others get
    the samples of rounds of prompts (0, then 1-2, then 3) until one is right, and each is the
    full protocol's."""
    from kgfact.answers import normalize
    from kgfact.models import ModelConfig

    model = ModelConfig(name=str(tiny_model_dir))
    full = SlickConfig(n_prompts=4, sampling=SamplingConfig(n_samples=3, max_new_tokens=4),
                       splits=("train",), max_questions_per_relation=8)
    first = run_slick(make_run(tmp_path / "first", mini_qa), full, model, progress=False)
    # teach the table some answers: the tiny random model knows nothing, so give train questions
    # (never in a prompt) one of its own answers as an alias: a greedy answer to every third,
    # to the next ones a sample no greedy answer gives (the one first drawn latest)
    alias = {}
    for i, row in enumerate(first.itertuples()):
        greedy = {normalize(a) for a in row.greedy_answers}
        other = [a for a in row.sample_answers if normalize(a) and normalize(a) not in greedy]
        if i % 3 == 0:
            alias[row.qid] = row.greedy_answers[2]
        elif i % 3 == 1 and other:
            alias[row.qid] = max(other, key=list(row.sample_answers).index)
    taught = mini_qa.assign(aliases=[[*a, alias[q]] if q in alias else a
                                     for q, a in zip(mini_qa["qid"], mini_qa["aliases"])])
    runs = {p: make_run(tmp_path / p, taught) for p in ("full", "lazy")}
    want = run_slick(runs["full"], full, model, progress=False)
    got = run_slick(runs["lazy"], replace(full, protocol="lazy"), model, progress=False)
    assert {"WeaklyKnown", "Unknown"} <= set(want["category"])
    assert set(want["category"]) & {"HighlyKnown", "MaybeKnown"}
    same = ["qid", "relation", "split", "distribution", "p_correct_greedy", "category",
            "greedy_answers", "greedy_correct", "guess", "guess_kind"]
    pd.testing.assert_frame_equal(got[same], want[same])
    n_s = 3
    for g, w in zip(got.itertuples(), want.itertuples()):
        drawn = len(g.sample_answers)
        if w.greedy_correct.any():
            assert drawn == 0
        else:  # to the end of the round (prompts 0, 1-2, 3) of the first right sample
            right = np.flatnonzero(w.sample_correct)
            ends = [1, 3, 4]
            assert drawn == (n_s * next(e for e in ends if e > right[0] // n_s)
                             if len(right) else 4 * n_s)
        assert list(g.sample_answers) == list(w.sample_answers[:drawn])
        assert list(g.sample_correct) == list(w.sample_correct[:drawn])
    complete = got["sample_answers"].map(len) == 4 * n_s
    for column in ("p_correct_sample", "p_correct"):
        assert got[column][complete].tolist() == want[column][complete].tolist()
        assert got[column][~complete].isna().all()  # missing, never 0
    stages = {p: r.manifest()["stages"]["slick"] for p, r in runs.items()}
    assert stages["lazy"]["config"]["slick"]["protocol"] == "lazy"
    assert stages["full"]["report"]["generations"] == 8 * 4 * (1 + n_s)
    assert stages["lazy"]["report"]["generations"] == 8 * 4 + got["sample_answers"].map(
        len).sum() < stages["full"]["report"]["generations"]


def test_theory_on_a_lazy_run_refuses_graded_and_leaves_it_out_otherwise(tmp_path, capsys):
    """p_correct that SliCK did not measure is missing downstream, never 0: the graded A(P)
    refuses in one line, the other A(P) run without it, and every mean of it is missing."""
    from kgfact.findings import findings
    from kgfact.report import slick_protocol, subgraph_metrics
    from kgfact.rundir import config_json
    from tests.test_theory import write_run

    run = write_run(tmp_path / "run")
    slick = run.read_table("slick")
    run.write_table("slick", slick.assign(
        p_correct=np.where(slick["category"] == "Unknown", 0.0, np.nan)))
    with run.stage("slick", config_json(slick=SlickConfig(protocol="lazy"))):
        pass
    args = ["theory", str(run.path), "--n-boot", "50", "--min-bucket", "1"]
    assert main([*args, "--augmentation", "graded"]) == 2
    assert capsys.readouterr().err == (
        "kgfact: error: A(P) 'graded' needs p_correct, the share of right SliCK answers, which "
        "this run's SliCK protocol 'lazy' does not measure; label with 'kgfact slick --protocol "
        "full --force' or choose another --augmentation\n")
    row = findings(run, n_boot=10).set_index("claim").loc["theory-tracks-reductions"]
    assert (row["verdict"], row["note"]) == (
        "not measured", "A(P) 'graded' needs p_correct, which SliCK's lazy protocol does not "
                        "measure: label with 'kgfact slick --protocol full --force'")
    assert main(args) == 0
    assert run.manifest()["stages"]["theory"]["report"]["not_measured"] == ["graded"]
    assert "graded" not in set(run.read_table("theory_stats")["augmentation"])
    assert "Not compared: A(P) graded" in (run.path / "theory_report.md").read_text()
    m = run.read_table("theory_metrics").set_index(["prompt_id", "qid"])["prompt_p_correct"]
    assert np.isnan(m[("few-shot/random/-/P17/0", "q3")])  # q1 HighlyKnown: not measured
    assert m[("zero-shot/none/-/P17/0", "q3")] == 0.0     # an empty prompt: nothing to measure
    means = subgraph_metrics(run).set_index("mode")["prompt_p_correct"]
    assert np.isnan(means["few-shot"]) and means["zero-shot"] == 0.0
    assert slick_protocol(run)["protocol"].tolist() == ["lazy"]


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


@pytest.mark.slow
def test_real_gemma_lazy_slick_gives_the_full_categories(tmp_path):
    """Gemma 3 270M on 24 real capital questions (3 prompts x (greedy + 4 samples)): lazy SliCK
    gives the full protocol's categories and greedy answers, and every sample it draws is the
    full protocol's, in the default dtype (bf16 here), where batches differ most."""
    from kgfact.data.offline import build_offline_dataset
    from kgfact.models import ModelConfig

    data = build_offline_dataset()
    qa, _ = build_qa(data.triples, data.entities, QAConfig(in_distribution=("P36", "P1376")))
    full = SlickConfig(n_prompts=3, sampling=SamplingConfig(n_samples=4), splits=("train",),
                       max_questions_per_relation=12)
    want = run_slick(make_run(tmp_path / "full", qa), full, ModelConfig(), progress=False)
    lazy = make_run(tmp_path / "lazy", qa)
    got = run_slick(lazy, replace(full, protocol="lazy"), ModelConfig(), progress=False)
    assert len(want) == 24 and {"HighlyKnown", "Unknown"} <= set(want["category"])
    same = ["qid", "category", "p_correct_greedy", "greedy_answers", "greedy_correct", "guess"]
    pd.testing.assert_frame_equal(got[same], want[same])
    for g, w in zip(got["sample_answers"], want["sample_answers"]):
        assert list(g) == list(w[:len(g)])
    drawn = got["sample_answers"].map(len)
    assert drawn[want["category"].isin(["HighlyKnown", "MaybeKnown"])].eq(0).all()
    assert drawn[want["category"] == "Unknown"].eq(12).all()
    assert lazy.manifest()["stages"]["slick"]["report"]["generations"] < 24 * 3 * 5
