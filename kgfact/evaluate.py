"""Evaluation: exact-match accuracy of the base model and every adapter under each prompt mode.

For every model (``base`` and ``<set>@<checkpoint>/seed-<s>`` for each trained set, checkpoint
and training seed), prompt mode and exemplar strategy, each test query is answered greedily
under ``n_prompts`` fixed prompts (exemplar sets drawn once per relation, shared by every query
of the relation and by every seed, so the sampling engine computes each prefix once; a
per-query strategy draws them per query, and a hint-bearing one starts the model's answer with
a fact about the query's subject). Written to the run:

- ``predictions``: one row per (model, prompt, query): the training ``seed`` (missing for the
  base model), the exemplar set ``prompt`` (its index; 0 for zero-shot), generation, parsed
  answer, CoT steps, correct, abstained;
- ``prompts`` and ``prompt_edges``: each prompt's exemplars (``qid`` names the query of a
  per-query prompt), and the edges it states (exemplar facts and their CoT steps, and with a
  ``qid`` the hint stated to that query only), for the theory stage;
Distributions: ``id`` (relations the evaluated fine-tuning sets were drawn from), ``near-id``
(relations of the QA data's in-distribution split that no evaluated set was trained on) and
``ood`` (the out-of-distribution split).

- ``accuracy``: per model (so per seed), mode, strategy, distribution, relation and SliCK
  category of the query:
  accuracy over all queries, answer rate, accuracy on answered queries ("I don't know" is an
  abstention, counted apart), and the memorised-answer rate (predictions that are one of the
  model's own fine-tuning answers: a model collapsed onto its training set);
- ``gap``: the factuality gap FT-Known vs FT-Unknown with bootstrap CIs (:mod:`kgfact.gap`);
- ``regression``: Gekhman's linear model over the %Unknown grid's fine-tuning dynamics, and
  ``regression_other``: the sets outside the grid against that fit (:mod:`kgfact.gap`).

The base model is loaded once per evaluation where the backend can switch adapters (the built-in
engine: :meth:`kgfact.sampling.KgfactEngine.use_adapter`), and all the work of a model (every
mode, strategy, prompt and query) is generated together, one batched pass per token budget.
Each model is checkpointed when done: a killed evaluation resumes losing at most one of them,
with the same final tables (generation is greedy, and the engine's answers do not depend on
what else is in a batch).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace

import pandas as pd
from tqdm.auto import tqdm

from kgfact.answers import match_many
from kgfact.config import check_fields
from kgfact.contract import CHECKPOINTS, adapter_dir, memorised, read_set, trained_sets
from kgfact.cost import Meter
from kgfact.errors import KgfactError
from kgfact.gap import factuality_gap, gekhman_other_sets, gekhman_regression
from kgfact.models import ModelConfig
from kgfact.prompts import (IDK, PROMPT_MODES, STRATEGIES, QueryGraph, StepWriter,
                            StrategyContext, is_abstention)
from kgfact.qa import sample_per_group, shuffled
from kgfact.registration import Registration
from kgfact.rundir import Checkpoints, RunDir, config_json
from kgfact.sampling import Request, SamplingBackend, SamplingConfig, make_backend
from kgfact.sampling.base import serve_model

STAGE = "evaluate"


@dataclass(frozen=True)
class EvalConfig:
    """What is evaluated, and how."""

    sets: tuple[str, ...] | None = field(default=None, metadata={"name": True,
        "help": "Fine-tuning sets whose adapters are evaluated; None = every trained set."})
    checkpoints: tuple[str, ...] = field(default=CHECKPOINTS, metadata={"nonempty": True,
        "help": "Adapter checkpoints: early_stop and/or convergence."})
    base: bool = field(default=True, metadata={"help": "Also evaluate the base model."})
    modes: tuple[str, ...] = field(default=("zero-shot", "few-shot", "cot"), metadata={
        "nonempty": True, "help": "Prompt modes (registry PROMPT_MODES: zero-shot, few-shot, "
                                  "cot and any registered)."})
    strategies: tuple[str, ...] = field(default=("random",), metadata={"nonempty": True,
        "help": "Exemplar strategies for the modes with exemplars (random, known, unknown, "
                "from-ft, disjoint, other-relation, neighbourhood; for modes with steps, such "
                "as CoT: path-hint, side-steps)."})
    shots: int = field(default=4, metadata={"min": 1, "help": "Exemplars per prompt."})
    n_prompts: int = field(default=3, metadata={"min": 1,
        "help": "Fixed exemplar sets per relation."})
    split: str = field(default="test", metadata={"help": "Split of the queries."})
    max_questions_per_relation: int | None = field(default=200, metadata={"min": 1,
        "help": "Seeded sample of queries per relation; None = all."})
    idk_answer: str = field(default=IDK, metadata={
        "help": "Answer counted as an abstention."})
    bootstrap: int = field(default=2000, metadata={"min": 1,
        "help": "Bootstrap resamples for CIs."})
    seed: int = field(default=0, metadata={"min": 0,
        "help": "Seed of query samples and exemplar sets."})
    registration: Registration = field(default_factory=Registration, metadata={
        "help": "Claims registered before evaluation runs (recorded in the manifest)."})

    def __post_init__(self) -> None:
        check_fields(self)
        for mode in self.modes:
            PROMPT_MODES.get(mode)
        for strategy in self.strategies:
            STRATEGIES.get(strategy)
        unknown = set(self.checkpoints) - set(CHECKPOINTS)
        if unknown:
            raise KgfactError(f"unknown checkpoint(s) {', '.join(sorted(unknown))}; "
                              f"use {', '.join(CHECKPOINTS)}")


@dataclass(frozen=True)
class EvalModel:
    """One model to evaluate: the base model, or an adapter of a fine-tuning set."""

    name: str = field(metadata={"help": "'base' or '<set>@<checkpoint>/seed-<seed>'."})
    set: str | None = field(metadata={"help": "Fine-tuning set, None for the base model."})
    checkpoint: str = field(metadata={"help": "'base', 'early_stop' or 'convergence'."})
    adapter: str | None = field(metadata={"help": "Adapter directory, None for the base model."})
    seed: int | None = field(default=None, metadata={
        "help": "Training seed of the adapter, None for the base model."})


def models_to_evaluate(run: RunDir, config: EvalConfig) -> list[EvalModel]:
    """The base model and every requested adapter that exists, for every trained seed."""
    out = [EvalModel("base", None, "base", None)] if config.base else []
    trained = trained_sets(run)
    sets = list(config.sets) if config.sets is not None else sorted({n for n, _ in trained})
    for name in sets:
        seeds = [s for n, s in trained if n == name]
        if not seeds:
            raise KgfactError(f"set {name!r} has no trained adapters in {run.path}: "
                              f"run 'kgfact finetune {run.path} --sets {name}' first")
        for seed in seeds:
            for checkpoint in config.checkpoints:
                path = adapter_dir(run, name, checkpoint, seed)
                out.append(EvalModel(f"{name}@{checkpoint}/seed-{seed}", name, checkpoint,
                                     str(path), seed))
    if not out:
        raise KgfactError("nothing to evaluate: no adapters and the base model left out")
    return out


def trained_relations(run: RunDir, targets: list[EvalModel]) -> set[str]:
    """Relations the evaluated adapters' fine-tuning sets were drawn from."""
    return {r for name in {m.set for m in targets if m.set is not None}
            for r in read_set(run, name)["relation"]}


def near_id(queries_: pd.DataFrame, trained: set[str]) -> pd.DataFrame:
    """``queries_`` with in-distribution relations that no evaluated set was trained on
    relabelled ``near-id`` (Gong et al.'s Near ID): in the QA data's ID split, yet new to every
    adapter. Without adapters nothing is relabelled.

    >>> q = pd.DataFrame({"relation": ["P17", "P131", "P30"],
    ...                   "distribution": ["id", "id", "ood"]})
    >>> near_id(q, {"P17"})["distribution"].tolist()
    ['id', 'near-id', 'ood']
    """
    if not trained:
        return queries_
    new = (queries_["distribution"] == "id") & ~queries_["relation"].isin(trained)
    return queries_.assign(distribution=queries_["distribution"].mask(new, "near-id"))


def queries(run: RunDir, config: EvalConfig) -> pd.DataFrame:
    """The test queries (ID and OOD), with the base model's SliCK category where known."""
    qa = run.read_table("qa")
    chosen = qa[qa["split"] == config.split]
    if chosen.empty:
        raise KgfactError(f"{run.path} has no {config.split!r} questions")
    if config.max_questions_per_relation is not None:
        chosen = sample_per_group(chosen, ["relation"], config.max_questions_per_relation,
                                  config.seed)
    category = (run.read_table("slick").set_index("qid")["category"]
                if run.has_table("slick") else pd.Series(dtype=object))
    return (chosen.assign(category=chosen["qid"].map(category))
            .sort_values(["relation", "qid"]).reset_index(drop=True))


class PromptBuilder:
    """Fixed prompts per (mode, strategy, set, relation), or per query for a per-query strategy,
    the hints a hint-bearing strategy states per query, and the edges each prompt states.

    The graph lookups of the per-query strategies and hints (:class:`kgfact.prompts.QueryGraph`)
    and each strategy's candidates per relation are computed once and shared by every query.
    """

    def __init__(self, run: RunDir, config: EvalConfig) -> None:
        self.config = config
        self.qa = run.read_table("qa").set_index("qid", drop=False)
        slick = run.read_table("slick") if run.has_table("slick") else None
        known = (slick.set_index("qid")["category"] != "Unknown") if slick is not None else \
            pd.Series(dtype=bool)
        triples = run.read_table("triples")
        self.steps = StepWriter(triples, run.read_table("entities"))
        qa = self.qa.reset_index(drop=True)
        self.graph = QueryGraph(triples, qa, known, self.steps)
        sets = run.read_table("ftsets")["set"] if run.has_table("ftsets") else []
        self.context = StrategyContext(
            qa, known, ft_qids=frozenset(q for name in sets for q in read_set(run, name)["qid"]),
            graph=self.graph)
        self.run = run
        self.prompts: dict[str, dict] = {}
        self.edges: list[tuple[str, str, str, str, str]] = []
        # edges stated to one query only: (prompt id, qid) -> the hint edge
        self.query_edges: dict[tuple[str, str], tuple[str, str, str]] = {}
        self.skipped: dict[str, list[str]] = {}
        self._pools: dict[tuple[str, str | None, str], pd.DataFrame] = {}
        self._per_query: dict[tuple[str, str, str | None, str], list[str]] = {}
        self._candidates: dict[tuple[str, str | None, str], pd.DataFrame] = {}
        self._hints: dict[str, dict[str, tuple[str, str, str]] | None] = {}

    def _pool(self, strategy: str, owner: str | None, relation: str) -> pd.DataFrame:
        """The strategy's candidates for ``relation`` (and ``owner``'s fine-tuning set)."""
        key = (strategy, owner, relation)
        if key not in self._pools:
            ctx = replace(self.context, ft_set=read_set(self.run, owner)) if owner else \
                self.context
            self._pools[key] = STRATEGIES.get(strategy)(ctx, relation)
        return self._pools[key]

    def prompt_ids(self, mode: str, strategy: str, model: EvalModel, relation: str
                   ) -> list[str]:
        """Ids of the ``n_prompts`` shared prompts for ``relation`` (built on first use), or []
        when the strategy has too few exemplars for the relation or gives this mode none (a
        hint to a mode without steps). Per-query strategies: :meth:`query_prompt_ids`."""
        spec = PROMPT_MODES.get(mode)
        if not spec.exemplars:
            pid = f"{mode}/none/-/{relation}/0"
            self.prompts.setdefault(pid, self._row(pid, None, mode, "none", relation, 0, [], ""))
            return [pid]
        strat = STRATEGIES.get(strategy)
        owner = model.set if strat.set_dependent else None
        if (strat.set_dependent and owner is None) or (strat.hint and not spec.steps):
            return []  # the base model has no set to draw from or avoid; a hint is a step
        ids = [f"{mode}/{strategy}/{owner or '-'}/{relation}/{p}"
               for p in range(self.config.n_prompts)]
        if ids[0] in self.prompts:
            return ids
        pool = self._pool(strategy, owner, relation)
        if len(pool) < self.config.shots:
            return []
        for p, pid in enumerate(ids):
            # a strategy that draws as another gets its exemplar sets, hence its prefixes
            self._add(pid, owner, mode, strategy, relation, p, shuffled(
                pool, self.config.seed, "eval", strat.draws_as or strategy, owner or "-",
                relation, str(p)))
        return ids

    def query_prompt_ids(self, mode: str, strategy: str, model: EvalModel, query) -> list[str]:
        """Ids of the ``n_prompts`` prompts of a per-query strategy for ``query`` (a row of the
        queries table), drawn from its own candidates; [] when it has fewer than ``shots``."""
        strat = STRATEGIES.get(strategy)
        owner = model.set if strat.set_dependent else None
        if strat.set_dependent and owner is None:
            return []
        key = (mode, strategy, owner, query.qid)
        if key not in self._per_query:
            # every mode draws the same exemplar sets, from candidates computed once
            found = (strategy, owner, query.qid)
            if found not in self._candidates:
                self._candidates[found] = strat.for_query(
                    self.context, self._pool(strategy, owner, query.relation), query)
            pool = self._candidates[found]
            ids = ([f"{mode}/{strategy}/{owner or '-'}/{query.relation}/{query.qid}/{p}"
                    for p in range(self.config.n_prompts)]
                   if len(pool) >= self.config.shots else [])
            for p, pid in enumerate(ids):
                self._add(pid, owner, mode, strategy, query.relation, p, shuffled(
                    pool, self.config.seed, "eval", strategy, owner or "-", query.relation,
                    query.qid, str(p)), qid=query.qid)
            self._per_query[key] = ids
        return self._per_query[key]

    def hints(self, query) -> dict[str, tuple[str, str, str]] | None:
        """One edge of each kind of hint for ``query`` (:meth:`QueryGraph.hints`), chosen by a
        seeded draw, or None unless the query has both: the two hint strategies are paired."""
        if query.qid not in self._hints:
            found = self.graph.hints(query.subject, query.object)
            self._hints[query.qid] = None if not all(found.values()) else {
                kind: _seeded_pick(edges, self.config.seed, "eval", "hint", kind, query.qid)
                for kind, edges in found.items()}
        return self._hints[query.qid]

    def requests(self, mode: str, strategy: str, model: EvalModel, relation: str,
                 queries_: pd.DataFrame) -> list[tuple[str, object, str]]:
        """(prompt id, query row, suffix) of each request of ``queries_`` (queries of
        ``relation``) under (mode, strategy). A relation none of whose queries gets a prompt
        is listed in :attr:`skipped` (unless the strategy needs the fine-tuning set the base
        model lacks)."""
        rows = list(queries_.itertuples())
        spec = PROMPT_MODES.get(mode)
        strat = STRATEGIES.get(strategy) if spec.exemplars else None
        if strat is not None and strat.per_query:
            out = [(pid, q, spec.query(q.question)) for q in rows
                   for pid in self.query_prompt_ids(mode, strategy, model, q)]
        elif strat is not None and strat.hint:
            ids, out = self.prompt_ids(mode, strategy, model, relation), []
            for q in rows:
                hint = (self.hints(q) or {}).get(strat.hint) if ids else None
                if hint is None:
                    continue
                # the model's answer starts with the hint: it generates on from there
                suffix = spec.query(q.question, self.steps.text([hint]))
                for pid in ids:
                    self.query_edges[(pid, q.qid)] = hint
                    out.append((pid, q, suffix))
        else:
            out = [(pid, q, spec.query(q.question))
                   for pid in self.prompt_ids(mode, strategy, model, relation) for q in rows]
        if strat is not None and not out and not (strat.set_dependent and model.set is None):
            skipped = self.skipped.setdefault(f"{mode}/{strategy}", [])
            if relation not in skipped:
                skipped.append(relation)
        return out

    def _add(self, pid: str, owner: str | None, mode: str, strategy: str, relation: str,
             p: int, order: pd.DataFrame, qid: str | None = None) -> None:
        """Prompt ``pid`` of the first ``shots`` questions of ``order`` and the edges it
        states (exemplars and, for a mode with steps, their steps)."""
        chosen = order.iloc[:self.config.shots]
        spec = PROMPT_MODES.get(mode)
        parts = []
        for row in chosen.itertuples():
            self.edges.append((pid, "exemplar", row.subject, row.relation, row.object))
            steps = None
            if spec.steps:
                edges = self.steps.steps(row.subject, row.relation, row.object)
                self.edges.extend((pid, "cot", *e) for e in edges)
                steps = self.steps.text(edges)
            parts.append(spec.exemplar(row.question, row.answer, steps))
        self.prompts[pid] = self._row(pid, owner, mode, strategy, relation, p,
                                      chosen["qid"].tolist(), "".join(parts), qid)

    @staticmethod
    def _row(pid, owner, mode, strategy, relation, p, exemplars, prefix, qid=None) -> dict:
        return {"prompt_id": pid, "set": owner, "mode": mode, "strategy": strategy,
                "relation": relation, "prompt": p, "qid": qid, "exemplars": exemplars,
                "prefix": prefix}

    def shares(self, queries_: pd.DataFrame) -> dict[str, dict[str, float]]:
        """Per relation, the share of ``queries_`` given a prompt by each per-query strategy
        built (``<strategy>_share``) and, where a hint strategy was, the share with a path
        hint (``path_hint_share``) and with the pair of hints both hint strategies need
        (``hint_pair_share``)."""
        asked = {s for (_, s, _, _) in self._per_query}
        prompted = {(s, q) for (_, s, _, q), ids in self._per_query.items() if ids}
        columns = {f"{s}_share": [(s, q) in prompted for q in queries_["qid"]]
                   for s in sorted(asked)}
        if self._hints:
            columns["path_hint_share"] = [
                bool(self.graph.hints(s, o)["path"])
                for s, o in zip(queries_["subject"], queries_["object"])]
            columns["hint_pair_share"] = [self._hints.get(q) is not None
                                          for q in queries_["qid"]]
        if not columns:
            return {}
        frame = pd.DataFrame(columns, index=queries_.index).groupby(queries_["relation"]).mean()
        return {name: {r: round(float(v), 4) for r, v in frame[name].items()}
                for name in frame.columns}

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The ``prompts`` table and the ``prompt_edges`` table (``qid`` set for an edge
        stated to that query only, missing for one every query of the prompt sees)."""
        prompts = pd.DataFrame(list(self.prompts.values()))
        columns = ["prompt_id", "source", "subject", "relation", "object", "qid"]
        edges = pd.DataFrame([(*e, None) for e in self.edges]
                             + [(pid, "cot", *e, qid)
                                for (pid, qid), e in self.query_edges.items()],
                             columns=columns).drop_duplicates()
        return prompts, edges


def _seeded_pick(edges: list[tuple[str, str, str]], seed: int, *names: str
                 ) -> tuple[str, str, str]:
    """One of ``edges``, by a seeded draw that depends only on the edges and ``names``."""
    keyed = pd.DataFrame({"qid": [" ".join(e) for e in edges],  # what shuffled orders by
                          "at": range(len(edges))})
    return edges[shuffled(keyed, seed, *names)["at"].iloc[0]]


def model_requests(model: EvalModel, jobs: list[tuple[str, str]], queries_: pd.DataFrame,
                   builder: PromptBuilder) -> tuple[list[Request], pd.DataFrame]:
    """The requests of one model under each (mode, strategy) of ``jobs``, in the order of the
    predictions table, and a frame of what each asks (prompt, query, mode, strategy)."""
    requests, rows = [], []
    for mode, strategy in jobs:
        for relation, group in queries_.groupby("relation", sort=True):
            for pid, q, suffix in builder.requests(mode, strategy, model, relation, group):
                requests.append(Request(f"{pid}|{q.qid}", builder.prompts[pid]["prefix"],
                                        suffix))
                rows.append((pid, q.qid, q.relation, q.distribution, q.category, q.answer,
                             q.aliases, mode, strategy))
    return requests, pd.DataFrame(rows, columns=[
        "prompt_id", "qid", "relation", "distribution", "category", "answer", "aliases", "mode",
        "strategy"])


def greedy_answers(backend: SamplingBackend, requests: list[Request], modes: list[str]
                   ) -> list[str]:
    """Each request's greedy answer under its prompt mode's token budget: one ``generate`` per
    budget, so a backend batches all the work of a budget together."""
    out: list[str] = [""] * len(requests)
    budgets: dict[int, list[int]] = {}
    for i, mode in enumerate(modes):
        budgets.setdefault(PROMPT_MODES.get(mode).max_new_tokens, []).append(i)
    for max_new_tokens, members in budgets.items():
        sampling = SamplingConfig(n_samples=0, max_new_tokens=max_new_tokens)
        for i, g in zip(members, backend.generate([requests[i] for i in members], sampling)):
            out[i] = g.greedy
    return out


def evaluate_model(backend: SamplingBackend, model: EvalModel, requests: list[Request],
                   frame: pd.DataFrame, config: EvalConfig) -> pd.DataFrame:
    """Predictions of one model for its :func:`model_requests` (``requests`` and what each
    asks, ``frame``), all generated in one batched pass per token budget."""
    if not requests:
        return pd.DataFrame()
    generations = greedy_answers(backend, requests, frame["mode"].tolist())
    parsed = [PROMPT_MODES.get(mode).parse(g) for g, mode in zip(generations, frame["mode"])]
    answers = [a for a, _ in parsed]
    modes, strategies = frame["mode"], frame["strategy"]
    frame = frame.drop(columns=["mode", "strategy"])  # re-added after the model columns
    return frame.assign(
        model=model.name, set=model.set, checkpoint=model.checkpoint,
        seed=pd.array([model.seed] * len(frame), dtype="Int64"),
        prompt=frame["prompt_id"].str.rsplit("/", n=1).str[-1].astype(int), mode=modes,
        strategy=strategies, generation=generations,
        cot_steps=[s for _, s in parsed], prediction=answers,
        correct=match_many(answers, frame["answer"].tolist(), frame["aliases"].tolist()),
        abstained=[is_abstention(a, config.idk_answer) for a in answers],
    ).drop(columns=["answer", "aliases"])


def _memorised(run: RunDir, predictions: pd.DataFrame) -> pd.Series:
    """Per prediction: is it one of its model's own fine-tuning answers (False for the base
    model, which has none)?"""
    out = pd.Series(False, index=predictions.index)
    for name, rows in predictions.groupby("set").groups.items():
        trained = read_set(run, name)["answer"].tolist()
        out[rows] = memorised(predictions.loc[rows, "prediction"].tolist(), trained)
    return out


def accuracy_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, answer rate, accuracy on answered queries and memorised-answer rate (share of
    predictions that are one of the model's own fine-tuning answers), per model, mode, strategy,
    distribution, relation and SliCK category (``"all"`` rows aggregate relations and
    categories)."""
    keys = ["model", "set", "checkpoint", "seed", "mode", "strategy", "distribution"]
    if "seed" not in predictions:  # a single, unrecorded seed
        predictions = predictions.assign(seed=pd.array([pd.NA] * len(predictions), "Int64"))
    frame = predictions.assign(category=predictions["category"].fillna("unlabelled"),
                               answered=~predictions["abstained"])
    parts = []
    for extra in (["relation", "category"], ["relation"], ["category"], []):
        g = frame.groupby(keys + extra, dropna=False)
        part = g.agg(n=("correct", "size"), accuracy=("correct", "mean"),
                     answer_rate=("answered", "mean"), n_answered=("answered", "sum"),
                     memorised_rate=("memorised", "mean"))
        correct_answered = (frame["correct"] & frame["answered"]).groupby(
            [frame[k] for k in keys + extra], dropna=False).sum()
        part["accuracy_answered"] = (correct_answered / part["n_answered"]).where(
            part["n_answered"] > 0)
        part = part.reset_index()
        for column in ("relation", "category"):
            if column not in extra:
                part[column] = "all"
        parts.append(part)
    return pd.concat(parts, ignore_index=True)[
        keys + ["relation", "category", "n", "accuracy", "answer_rate", "n_answered",
                "accuracy_answered", "memorised_rate"]]


def evaluate(run: RunDir | str, config: EvalConfig | None = None,
             model: ModelConfig | None = None, *, backend: str | SamplingBackend = "kgfact",
             backend_options: dict | None = None, max_batch: int = 32, progress: bool = True
             ) -> pd.DataFrame:
    """Evaluate a run's base model and adapters; writes the tables listed in the module docs.

    ``backend`` is a registered name or an instance. By name, one backend is started and
    switched from adapter to adapter where it can (:func:`kgfact.sampling.base.serve_model`),
    else one is started per model. Each model is checked against the adapter its backend
    states it serves (:func:`kgfact.sampling.check_adapter`); an instance is checked against
    every model before any work, so one serving the base model is refused when adapters are
    evaluated.

    Returns the ``accuracy`` table.
    """
    run = RunDir.of(run)
    config = config or EvalConfig()
    base = model or ModelConfig()
    targets = models_to_evaluate(run, config)
    qs = near_id(queries(run, config), trained_relations(run, targets))
    spec = config_json(evaluate=config, model=base)
    checkpoints = Checkpoints(run, STAGE, spec)
    builder = PromptBuilder(run, config)
    jobs = [(mode, strategy) for mode in config.modes
            for strategy in (config.strategies if PROMPT_MODES.get(mode).exemplars
                             else ("none",))]
    if not isinstance(backend, str):  # an instance serves one model: refuse before any work
        for m in targets:
            make_backend(backend, replace(base, adapter=m.adapter), label=m.name)
    with run.stage(STAGE, spec, seed=config.seed) as info:
        # fixed before any answer is seen: the findings read the claims from here
        run.annotate(STAGE, registration={"sha256": config.registration.digest(),
                                          "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime())})
        parts = []
        bar = tqdm(total=len(targets) * len(jobs) * len(qs), unit="q", desc="evaluate",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        engine, meter = None, Meter(STAGE, base, backend)
        with bar:
            for m in targets:
                bar.set_postfix(model=m.name)
                # prompts are rebuilt even for finished models: the prompt tables need them
                requests, frame = model_requests(m, jobs, qs, builder)
                if (saved := checkpoints.load(m.name)) is None:
                    # one engine for the whole evaluation where the backend can switch
                    # adapters: the base model is loaded once
                    engine = serve_model(backend, replace(base, adapter=m.adapter), engine,
                                         max_batch, label=m.name, **(backend_options or {}))
                    saved = evaluate_model(engine, m, requests, frame, config)
                    meter.add(len(saved))  # one generation per prediction
                    checkpoints.save(m.name, saved)
                parts.append(saved)
                bar.update(len(jobs) * len(qs))
        meter.record()
        if not any(len(p) for p in parts):
            raise KgfactError(f"no prompt could be built: every relation has fewer than "
                              f"{config.shots} exemplars for {', '.join(config.strategies)}; "
                              "lower --shots or choose other strategies")
        predictions = pd.concat([p for p in parts if len(p)], ignore_index=True)
        predictions["memorised"] = _memorised(run, predictions)
        prompts, edges = builder.tables()
        run.write_table("predictions", predictions)
        run.write_table("prompts", prompts)
        run.write_table("prompt_edges", edges)
        accuracy = accuracy_table(predictions)
        run.write_table("accuracy", accuracy)
        report: dict = {"queries": len(qs), "models": [m.name for m in targets],
                        "skipped_prompts": builder.skipped, **builder.shares(qs)}
        sets = set(predictions["set"].dropna())
        if {"ft-known", "ft-unknown"} <= sets:
            gap = factuality_gap(predictions, n_boot=config.bootstrap, seed=config.seed)
            run.write_table("gap", gap)
            report["gap"] = gap.to_dict(orient="records")
        if run.has_table("dynamics"):
            try:
                dynamics = run.read_table("dynamics")
                run.write_table("regression", gekhman_regression(
                    dynamics, n_boot=config.bootstrap, seed=config.seed))
                run.write_table("regression_other", gekhman_other_sets(
                    dynamics, n_boot=config.bootstrap, seed=config.seed))
            except KgfactError as exc:  # too few points is a finding, not a failure
                report["regression"] = str(exc)
        info["report"] = report
    checkpoints.clear()
    return accuracy


def run_stage(run: RunDir | str, config: EvalConfig, *, model: ModelConfig | None = None,
              backend=None, progress: bool = True) -> pd.DataFrame:
    """The evaluation stage (:mod:`kgfact.stages`): :func:`evaluate` with a ``BackendConfig``
    (a complete evaluation is redone: its work is checkpointed per job, not skipped)."""
    if backend is None:
        return evaluate(run, config, model, progress=progress)
    return evaluate(run, config, model, backend=backend.name, backend_options=backend.options(),
                    max_batch=backend.max_batch, progress=progress)
