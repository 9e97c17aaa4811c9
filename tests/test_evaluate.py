"""Evaluation: prompts and CoT steps, answer parsing, abstentions, accuracy tables, the gap with
its bootstrap CI and Gekhman's regression, with exact values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kgfact.cli import main
from kgfact.errors import KgfactError
from kgfact.evaluate import (EvalConfig, EvalModel, PromptBuilder, accuracy_table, evaluate,
                             models_to_evaluate, trained_relations)
from kgfact.gap import bootstrap_mean_ci, factuality_gap
from kgfact.models import ModelConfig
from kgfact.prompts import PROMPT_MODES, PromptMode, StepWriter, is_abstention
from kgfact.sampling import BACKENDS, Generation
from tests import ftworld


def test_each_mode_parses_its_generations():
    cot, few = PROMPT_MODES.get("cot"), PROMPT_MODES.get("few-shot")
    assert cot.parse(" Town 1 lies in Region 1. Region 1 is in the country Lemuria. "
                     "So the answer is Lemuria.") == (
        "Lemuria", ["Town 1 lies in Region 1.", "Region 1 is in the country Lemuria."])
    assert cot.parse(" Lemuria.") == ("Lemuria", [])
    assert few.parse(" Lemuria. So the answer is x") == ("Lemuria. So the answer is x", [])
    assert PROMPT_MODES.get("zero-shot").parse("\n Lemuria.\nQ: next") == ("Lemuria", [])
    assert is_abstention(" I don't know.".strip(" ."), "I don't know")
    assert is_abstention("i dont know", "I don't know")
    assert not is_abstention("", "I don't know") and not is_abstention("Lemuria", "I don't know")


def test_cot_steps_follow_kg_paths_or_state_supporting_facts():
    steps = StepWriter(*ftworld.tables())
    # town 7: region Q501 (Region 1), which lies in Lemuria; the town is in Lemuria too
    assert steps.steps("Q1007", "P17", "Q200") == [("Q1007", "P131", "Q501"),
                                                    ("Q501", "P17", "Q200")]
    assert steps.text(steps.steps("Q1007", "P17", "Q200")) == (
        "Town 7 lies in the administrative region Region 1. Region 1 is in the country Lemuria.")
    # for the region question there is no other path: the town's other fact supports it
    assert steps.steps("Q1007", "P131", "Q501") == [("Q1007", "P17", "Q200")]
    cot, few = PROMPT_MODES.get("cot"), PROMPT_MODES.get("few-shot")
    assert cot.exemplar("Which country is Town 7 in?", "Lemuria", "S.") == (
        "Q: Which country is Town 7 in?\nA: S. So the answer is Lemuria.\n\n")
    assert cot.exemplar("Q?", "A", "") == "Q: Q?\nA: So the answer is A.\n\n"
    assert few.exemplar("Q?", "A") == "Q: Q?\nA: A\n\n"
    assert cot.query("Q?", "S.") == "Q: Q?\nA: S." and few.query("Q?") == "Q: Q?\nA:"


@pytest.mark.parametrize("fields, message", [
    ({"exemplars": False, "steps": True}, "a prompt mode that states steps needs exemplars"),
    ({"exemplars": True, "max_new_tokens": 0}, "max_new_tokens must be >= 1, got 0"),
    ({"exemplars": 1}, "exemplars must be true or false, got 1"),
])
def test_a_prompt_mode_that_cannot_work_is_refused(fields, message):
    with pytest.raises(KgfactError, match=message):
        PromptMode(**fields)


@pytest.fixture
def run(tmp_path):
    return ftworld.make_ft_run(tmp_path / "run")


def test_exemplar_strategies_draw_what_they_say(run):
    config = EvalConfig(strategies=("known", "unknown", "from-ft", "disjoint", "other-relation"),
                        shots=2, n_prompts=2)
    builder = PromptBuilder(run, config)
    model = EvalModel("ft-known@convergence", "ft-known", "convergence", "x")
    qa = run.read_table("qa").set_index("qid")
    category = run.read_table("slick").set_index("qid")["category"]
    ft = set(run.read_table("ftsets/ft-known")["qid"])
    for strategy in config.strategies:
        ids = builder.prompt_ids("few-shot", strategy, model, "P17")
        assert len(ids) == 2
        for pid in ids:
            exemplars = builder.prompts[pid]["exemplars"]
            assert len(exemplars) == 2
            relations = set(qa.loc[exemplars, "relation"])
            assert relations == ({"P131"} if strategy == "other-relation" else {"P17"})
            if strategy == "known":
                assert (category[exemplars] != "Unknown").all()
            if strategy == "unknown":
                assert (category[exemplars] == "Unknown").all()
            if strategy == "from-ft":
                assert set(exemplars) <= ft
            if strategy == "disjoint":
                assert not set(exemplars) & ft
                assert set(qa.loc[exemplars, "split"]) == {"train"}
    # the base model has no fine-tuning set: set-dependent strategies give no prompt
    base = EvalModel("base", None, "base", None)
    assert builder.prompt_ids("few-shot", "from-ft", base, "P17") == []
    cot = builder.prompt_ids("cot", "known", model, "P17")[0]
    prompts, edges = builder.tables()
    mine = edges[edges["prompt_id"] == cot]
    assert (mine["source"] == "exemplar").sum() == 2
    assert set(mine.loc[mine["source"] == "cot", "relation"]) <= {"P131", "P17"}
    assert "So the answer is" in prompts.set_index("prompt_id").loc[cot, "prefix"]


class OracleBackend:
    """A backend scripted by the adapter it is started on: ``ft-known`` adapters answer right,
    ``ft-unknown`` ones say "I don't know", the base model answers "Atlantis"."""

    def __init__(self, adapter):
        self.adapter = adapter

    @classmethod
    def from_config(cls, model, max_batch=32):
        return cls(model.adapter)

    def generate(self, requests, config, on_done=None):
        gold = self.gold
        out = []
        for r in requests:
            answer = gold[r.key.split("|")[1]]
            adapter = self.adapter or ""
            text = (f" {answer}" if "ft-known" in adapter else
                    " I don't know" if "ft-unknown" in adapter else " Atlantis")
            if config.max_new_tokens > 16:  # CoT
                text = f" Some step. So the answer is{text}."
            out.append(Generation(r.key, text, ()))
        return out


def test_evaluate_accuracy_abstentions_and_gap_exactly(run, tmp_path):
    for name in ("ft-known", "ft-unknown"):
        for checkpoint in ("early_stop", "convergence"):
            path = run.path / "adapters" / name / "seed-0" / checkpoint
            path.mkdir(parents=True)
    OracleBackend.gold = run.read_table("qa").set_index("qid")["answer"].to_dict()
    BACKENDS.register("oracle", OracleBackend, replace=True)
    accuracy = evaluate(run, EvalConfig(n_prompts=2, shots=2, bootstrap=200), ModelConfig(),
                        backend="oracle", progress=False)
    predictions = run.read_table("predictions")
    n_queries = 12  # 6 test questions of each relation
    # base + 2 sets x 2 checkpoints; zero-shot has one prompt, few-shot and CoT two each
    assert len(predictions) == 5 * n_queries * (1 + 2 + 2)
    total = accuracy[(accuracy["relation"] == "all") & (accuracy["category"] == "all")]
    by_model = total.groupby("model")
    assert by_model["accuracy"].min()["ft-known@convergence/seed-0"] == 1.0
    unknown = total[total["model"] == "ft-unknown@early_stop/seed-0"]
    assert (unknown["accuracy"] == 0).all() and (unknown["answer_rate"] == 0).all()
    assert unknown["accuracy_answered"].isna().all()
    # FT-Unknown says "I don't know", no answer of its set; the base model has no set; FT-Known
    # answers right, and a country it was trained on is a memorised answer
    memorised = total.groupby("set", dropna=False)["memorised_rate"].max()
    assert memorised["ft-unknown"] == 0
    assert (total.loc[total["model"] == "base", "memorised_rate"] == 0).all()
    ft_known = run.read_table("ftsets/ft-known")["answer"]
    expected = run.read_table("qa").query("split == 'test'")["answer"].isin(ft_known).mean()
    zero_shot = total[(total["model"] == "ft-known@convergence/seed-0") & (total["mode"] == "zero-shot")]
    assert zero_shot["memorised_rate"].tolist() == pytest.approx([expected])
    base = total[total["model"] == "base"]
    atlantis = run.read_table("qa").query("split == 'test'")["answer"].eq("Atlantis").mean()
    assert base["accuracy"].tolist() == pytest.approx([atlantis] * len(base))
    assert (base["answer_rate"] == 1).all()
    cot = predictions[(predictions["mode"] == "cot") & (predictions["set"] == "ft-known")]
    assert all(list(s) == ["Some step."] for s in cot["cot_steps"]) and cot["correct"].all()
    gap = run.read_table("gap")
    assert len(gap) == 3 * 2  # modes x checkpoints, ID only
    assert (gap["gap"] == 1.0).all() and (gap["ci_low"] == 1.0).all() and (gap["n"] == 12).all()
    prompts, edges = run.read_table("prompts"), run.read_table("prompt_edges")
    assert set(predictions["prompt_id"]) <= set(prompts["prompt_id"])
    assert set(edges["prompt_id"]) <= set(prompts["prompt_id"])
    stage = run.manifest()["stages"]["evaluate"]
    assert stage["status"] == "complete" and len(stage["report"]["gap"]) == 6


def test_accuracy_table_counts_abstentions_apart():
    predictions = pd.DataFrame({
        "model": "m", "set": "s", "checkpoint": "convergence", "mode": "zero-shot",
        "strategy": "none", "distribution": "id", "relation": ["P17"] * 4 + ["P36"],
        "category": ["Unknown", "Unknown", "HighlyKnown", None, "Unknown"],
        "correct": [True, False, False, True, False],
        "abstained": [False, False, True, False, True],
        "memorised": [True, False, False, False, True]})
    table = accuracy_table(predictions).set_index(["relation", "category"])
    row = table.loc[("all", "all")]
    assert row["n"] == 5 and row["accuracy"] == 2 / 5 and row["answer_rate"] == 3 / 5
    assert row["accuracy_answered"] == 2 / 3 and row["memorised_rate"] == 2 / 5
    assert table.loc[("P17", "all"), "memorised_rate"] == 1 / 4
    assert table.loc[("P17", "Unknown"), "accuracy"] == 0.5
    assert table.loc[("all", "unlabelled"), "n"] == 1
    assert np.isnan(table.loc[("P36", "all"), "accuracy_answered"])


def test_gap_ci_and_pairing():
    rows = []
    for qid, (k, u) in enumerate([(1, 0), (1, 0), (1, 1), (0, 0)]):
        for name, correct in (("ft-known", k), ("ft-unknown", u)):
            rows.append(("few-shot", "random", "id", "convergence", name, qid, bool(correct)))
    predictions = pd.DataFrame(rows, columns=["mode", "strategy", "distribution", "checkpoint",
                                              "set", "qid", "correct"])
    gap = factuality_gap(predictions, n_boot=500).iloc[0]
    assert (gap["acc_known"], gap["acc_unknown"], gap["gap"], gap["n"]) == (0.75, 0.25, 0.5, 4)
    assert 0.0 <= gap["ci_low"] <= 0.5 <= gap["ci_high"] <= 1.0
    assert bootstrap_mean_ci(np.array([0.5, 0.5])) == (0.5, 0.5)
    with pytest.raises(KgfactError, match="needs predictions of both"):
        factuality_gap(predictions[predictions["set"] == "ft-known"])


def test_evaluate_cli_on_the_tiny_model(run, tiny_model_dir, capsys):
    assert main(["evaluate", str(run.path), "--model", str(tiny_model_dir), "--modes",
                 "zero-shot,few-shot", "--prompts", "1", "--shots", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "few-shot" in out and "predictions" in out
    predictions = run.read_table("predictions")
    assert set(predictions["model"]) == {"base"} and len(predictions) == 12 * 2
    assert main(["evaluate", str(run.path), "--sets", "nope", "--quiet"]) == 2
    assert "set 'nope' has no trained adapters" in capsys.readouterr().err
    assert main(["evaluate", str(run.path), "--modes", "two-shot"]) == 2
    assert "unknown prompt mode 'two-shot'" in capsys.readouterr().err


class DroppingBackend(OracleBackend):
    """A backend that starts every model without its adapter (as the vLLM backend once did)."""

    @classmethod
    def from_config(cls, model, max_batch=32):
        return cls(None)


class SilentBackend(OracleBackend):
    """A backend that does not say which adapter it serves."""

    def __init__(self, adapter):
        self.served = adapter

    @classmethod
    def from_config(cls, model, max_batch=32):
        return cls(model.adapter)


@pytest.mark.parametrize("backend, message", [
    ("dropping", "serves the bare model but 'ft-known@early_stop/seed-0' needs"),
    ("silent", "does not say which adapter it serves"),
    (OracleBackend(None), "serves the bare model but 'ft-known@early_stop/seed-0' needs"),
])
def test_a_backend_that_does_not_serve_the_adapter_is_refused(run, backend, message):
    for checkpoint in ("early_stop", "convergence"):
        (run.path / "adapters" / "ft-known" / "seed-0" / checkpoint).mkdir(parents=True)
    OracleBackend.gold = run.read_table("qa").set_index("qid")["answer"].to_dict()
    BACKENDS.register("dropping", DroppingBackend, replace=True)
    BACKENDS.register("silent", SilentBackend, replace=True)
    config = EvalConfig(sets=("ft-known",), modes=("zero-shot",), base=False, bootstrap=10)
    with pytest.raises(KgfactError, match=message):
        evaluate(run, config, ModelConfig(), backend=backend, progress=False)
    assert not run.has_table("predictions")
    # an instance that serves exactly the evaluated model is accepted
    evaluate(run, EvalConfig(modes=("zero-shot",), sets=(), bootstrap=10), ModelConfig(),
             backend=OracleBackend(None), progress=False)
    assert set(run.read_table("predictions")["model"]) == {"base"}


class CountingBackend(OracleBackend):
    """An oracle that counts the requests it is given."""

    requests = 0

    def generate(self, requests, config, on_done=None):
        CountingBackend.requests += len(requests)
        return super().generate(requests, config, on_done)


def test_a_backend_instance_is_refused_before_any_work_when_adapters_are_evaluated(run):
    """An instance serves one model: rather than score the base model first and fail at the
    first adapter (or, once, score the base model under every adapter's name), evaluation
    refuses it before generating anything."""
    for checkpoint in ("early_stop", "convergence"):
        (run.path / "adapters" / "ft-known" / "seed-0" / checkpoint).mkdir(parents=True)
    OracleBackend.gold = run.read_table("qa").set_index("qid")["answer"].to_dict()
    with pytest.raises(KgfactError) as error:
        evaluate(run, EvalConfig(sets=("ft-known",), modes=("zero-shot",), bootstrap=10),
                 ModelConfig(), backend=CountingBackend(None), progress=False)
    adapter = (run.path / "adapters" / "ft-known" / "seed-0" / "early_stop").resolve()
    assert str(error.value) == (f"backend CountingBackend serves the bare model but "
                                f"'ft-known@early_stop/seed-0' needs {adapter}; give the backend by "
                                "name so one is started per model")
    assert CountingBackend.requests == 0
    assert run.stage_status("evaluate") is None


def test_every_adapter_is_served(run, tiny_model_dir):
    """The built-in backend on real adapters, swapped on one engine: each model's answers are
    those of an engine started on its adapter (the two random adapters and the bare model all
    answer differently)."""
    from kgfact.models import load_model
    from kgfact.sampling import KgfactEngine, Request, SamplingConfig
    from tests.tinymodel import make_tiny_adapter

    for seed, checkpoint in enumerate(("early_stop", "convergence"), start=1):
        make_tiny_adapter(tiny_model_dir, run.path / "adapters" / "ft-known" / "seed-0" / checkpoint, seed)
    model = ModelConfig(name=str(tiny_model_dir), dtype="float32")
    evaluate(run, EvalConfig(sets=("ft-known",), modes=("zero-shot",), bootstrap=10), model,
             progress=False)
    predictions = run.read_table("predictions")
    questions = run.read_table("qa").set_index("qid")["question"]
    by_model = {}
    for name, rows in predictions.groupby("model"):
        adapter = None if name == "base" else str(run.path / "adapters" / "ft-known" / "seed-0" /
                                                  name.split("@")[1].split("/")[0])
        engine = KgfactEngine(load_model(ModelConfig(name=str(tiny_model_dir), dtype="float32",
                                                     adapter=adapter)))
        want = engine.generate([Request(q, "", f"Q: {questions[q]}\nA:") for q in rows["qid"]],
                               SamplingConfig(n_samples=0))
        assert rows["generation"].tolist() == [g.greedy for g in want]
        by_model[name] = tuple(rows["generation"])
    assert len(set(by_model.values())) == 3


def test_relations_no_set_was_trained_on_are_near_id(tmp_path):
    """Sets drawn from P17 alone: P131, in the ID split, is near-ID for every table."""
    from kgfact.ftsets import FtSetsConfig, make_ftsets

    run = ftworld.make_run(tmp_path / "run")
    make_ftsets(run, FtSetsConfig(size=4, unknown_shares=(0.0, 1.0), relations=("P17",)))
    for name in ("ft-known", "ft-unknown"):
        for checkpoint in ("early_stop", "convergence"):
            (run.path / "adapters" / name / "seed-0" / checkpoint).mkdir(parents=True)
    OracleBackend.gold = run.read_table("qa").set_index("qid")["answer"].to_dict()
    BACKENDS.register("oracle", OracleBackend, replace=True)
    evaluate(run, EvalConfig(modes=("zero-shot",), bootstrap=10), ModelConfig(),
             backend="oracle", progress=False)
    predictions = run.read_table("predictions")
    assert (predictions.groupby("relation")["distribution"].unique().map(list).to_dict()
            == {"P17": ["id"], "P131": ["near-id"]})
    assert set(run.read_table("gap")["distribution"]) == {"id", "near-id"}
    assert set(run.read_table("accuracy")["distribution"]) == {"id", "near-id"}


def test_no_prompt_at_all_is_a_one_line_error(run):
    BACKENDS.register("oracle", OracleBackend, replace=True)
    with pytest.raises(KgfactError, match="no prompt could be built: every relation has fewer "
                                          "than 1000 exemplars"):
        evaluate(run, EvalConfig(modes=("few-shot",), shots=1000, sets=(), bootstrap=10),
                 ModelConfig(), backend="oracle", progress=False)


class CountingEngines:
    """The built-in backend, counting the engines started (each loads the base model)."""

    started = 0

    @classmethod
    def from_config(cls, model, max_batch=32):
        from kgfact.sampling import KgfactEngine

        cls.started += 1
        return KgfactEngine.from_config(model, max_batch=max_batch)


def per_model_generations(run, model: ModelConfig, config: EvalConfig) -> dict:
    """Each prediction's generation as the per-model path evaluation took before gives it: a
    new engine per model, one generate per mode, buckets of one prefix and one suffix length."""
    from kgfact.evaluate import greedy_answers, model_requests, near_id, queries
    from kgfact.models import load_model
    from kgfact.sampling import KgfactEngine

    builder = PromptBuilder(run, config)
    targets = models_to_evaluate(run, config)
    qs = near_id(queries(run, config), trained_relations(run, targets))
    want = {}
    for m in targets:
        engine = KgfactEngine(load_model(replace(model, adapter=m.adapter)), packing="bucket")
        for mode in config.modes:
            job = (mode, "random" if mode != "zero-shot" else "none")
            requests, frame = model_requests(m, [job], qs, builder)
            answers = greedy_answers(engine, requests, [mode] * len(requests))
            for pid, qid, answer in zip(frame["prompt_id"], frame["qid"], answers):
                want[(m.name, pid, qid)] = answer
    return want


def test_one_engine_answers_every_model_as_an_engine_per_model_did(run, tiny_model_dir):
    """The base model is loaded once and the adapters swapped on it, every mode of a model in
    one packed batch per token budget; the predictions are exactly those of the per-model
    path."""
    from tests.tinymodel import make_tiny_adapter

    for seed, checkpoint in enumerate(("early_stop", "convergence"), start=1):
        make_tiny_adapter(tiny_model_dir,
                          run.path / "adapters" / "ft-known" / "seed-0" / checkpoint, seed)
    model = ModelConfig(name=str(tiny_model_dir), dtype="bfloat16")
    config = EvalConfig(sets=("ft-known",), n_prompts=2, shots=2, bootstrap=10)
    BACKENDS.register("counting-kgfact", CountingEngines, replace=True)
    CountingEngines.started = 0
    evaluate(run, config, model, backend="counting-kgfact", progress=False)
    assert CountingEngines.started == 1
    got = run.read_table("predictions").set_index(["model", "prompt_id", "qid"])["generation"]
    want = per_model_generations(run, model, config)
    assert len(want) == 3 * 12 * (1 + 2 + 2)
    assert got.to_dict() == want
    assert got.groupby(level="model").apply(tuple).nunique() == 3  # three different models


@pytest.mark.slow
def test_one_engine_answers_as_per_model_engines_on_gemma(run):
    """The same on the real Gemma 3 270M in bf16 (the precision kgfact picks on CPUs with
    native bf16 matrix instructions and on GPUs), every mode, a few queries: the base model,
    then an adapter swapped onto it.

    The adapter is a freshly initialised one (a zero update): a random one makes Gemma's
    next-token distribution nearly flat, and there the last bit of a logit, which bf16 kernels
    on some CPUs round by batch shape, picks among near-ties. The per-model path disagrees with
    itself there too (7 of these 24 generations differed between batches of 32 and of 1 on an
    AVX2 CPU), so identity is only a property of prompts whose answer is not a near-tie. The
    tiny-model test above checks real updates.
    """
    from kgfact.models import embedded_model_dir
    from tests.tinymodel import make_tiny_adapter

    make_tiny_adapter(embedded_model_dir(),
                      run.path / "adapters" / "ft-known" / "seed-0" / "convergence")
    config = EvalConfig(sets=("ft-known",), checkpoints=("convergence",), n_prompts=1,
                        shots=2, max_questions_per_relation=2, bootstrap=10)
    model = ModelConfig(dtype="bfloat16")
    evaluate(run, config, model, progress=False)
    got = run.read_table("predictions").set_index(["model", "prompt_id", "qid"])["generation"]
    want = per_model_generations(run, model, config)
    assert len(want) == 2 * 4 * 3
    assert got.to_dict() == want
    by_model = got.groupby(level="model").apply(list)
    assert by_model["base"] == by_model["ft-known@convergence/seed-0"]


class BudgetOracle(OracleBackend):
    """An oracle recording each generate call (adapter, token budget, requests), that fails
    the first time it is asked for ``fail`` adapter's CoT answers."""

    calls: list = []
    fail: str | None = None

    def generate(self, requests, config, on_done=None):
        name = self.adapter and Path(self.adapter).name
        if config.max_new_tokens > 16 and name is not None and name == BudgetOracle.fail:
            BudgetOracle.fail = None
            raise KgfactError("killed")
        BudgetOracle.calls.append((name, config.max_new_tokens, len(requests)))
        return super().generate(requests, config, on_done)


def test_a_model_is_one_pass_per_token_budget_and_an_evaluation_resumes_per_model(tmp_path):
    """Every mode of a model goes to the backend together, one generate per token budget
    (zero-shot and few-shot: 16 tokens, CoT: 64); a run killed inside a model resumes from the
    models finished before it, redoing that model whole, to the tables of an unbroken run."""
    BACKENDS.register("budget", BudgetOracle, replace=True)
    config = EvalConfig(n_prompts=2, shots=2, bootstrap=50)
    tables = {}
    for name, fail in (("whole", None), ("killed", "convergence")):
        run = ftworld.make_ft_run(tmp_path / name)
        for checkpoint in ("early_stop", "convergence"):
            (run.path / "adapters" / "ft-known" / "seed-0" / checkpoint).mkdir(parents=True)
        OracleBackend.gold = run.read_table("qa").set_index("qid")["answer"].to_dict()
        BudgetOracle.calls, BudgetOracle.fail = [], fail
        if fail:
            with pytest.raises(KgfactError, match="killed"):
                evaluate(run, config, ModelConfig(), backend="budget", progress=False)
            # base and ft-known@early_stop were done; convergence gave its 16-token answers
            assert [c[0] for c in BudgetOracle.calls] == [None, None, "early_stop",
                                                          "early_stop", "convergence"]
            BudgetOracle.calls = []
        evaluate(run, config, ModelConfig(), backend="budget", progress=False)
        tables[name] = {t: run.read_table(t) for t in ("predictions", "accuracy", "prompts")}
        calls = BudgetOracle.calls
    # 12 queries: zero-shot 1 prompt + few-shot 2 = 36 requests at 16 tokens, CoT 2 = 24 at 64
    assert calls == [("convergence", 16, 36), ("convergence", 64, 24)]
    for table in tables["whole"]:
        pd.testing.assert_frame_equal(tables["killed"][table], tables["whole"][table])
