"""SliCK knowledge categories (Gekhman et al., EMNLP 2024), exactly as the paper defines them.

For each question, ``n_prompts`` (10) few-shot prompts are built from fixed exemplar sets of
``shots`` (4) questions of the same relation, drawn from the dev split; each prompt is answered
once greedily and ``n_samples`` (16) times at temperature 0.5 with top-k 40. Then

- ``P_correct(T=0)`` = share of the 10 greedy answers that are correct,
- ``P_correct(T>0)`` = share of the 160 sampled answers that are correct,

and the category is **HighlyKnown** if ``P(T=0) = 1``; **MaybeKnown** if ``0 < P(T=0) < 1``;
**WeaklyKnown** if ``P(T=0) = 0`` and ``P(T>0) > 0``; **Unknown** if both are 0.

That is the ``full`` protocol (the default). The ``lazy`` one gives the same categories from far
fewer answers: a question greedy answers right under some prompt is decided by greedy alone, so
it samples only for the questions greedy never gets right, in rounds of prompts (prompt 0's
samples, then prompts 1-2's, 3-6's, ...) and only until a round has a right one. Samples are seeded per (question,
prompt, sample), so each sample it draws is the full protocol's. It does not measure
``P_correct(T>0)`` and the share of all answers right (``p_correct``) except where it drew every
sample (Unknown questions): they are missing (NaN), never 0.

A second call on a run labelled under the same protocol (prompts, exemplars, templates,
sampling, seed, model, answering engine) with another selection of questions (relations, splits,
caps) labels only the questions not yet in the table and adds them: answers are seeded per
question and exemplar sets per (relation, prompt), and each (relation, split) keeps the first
questions of one seeded order, so the grown table is the one a single call selecting them all
would give. Another protocol needs ``force``.

The exemplar sets are fixed per relation (so their KV caches are shared by every question of
the relation). A dev question never appears in its own prompt: where it is one of the set's
exemplars, it is replaced by the next pool question not already in the set. Correctness is
:func:`kgfact.answers.match_many` against the gold answer and its aliases.

Every record is also checked for a guess (:mod:`kgfact.guessing`): ``guess`` and ``guess_kind``
say whether its gold answer is the model's default answer for the relation or is spelled out in
the question, and the ``guess_baselines`` table gives each relation's accuracy without knowledge
(always the most frequent train answer; always the model's default).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kgfact.answers import match_many
from kgfact.config import check_fields
from kgfact.contract import CATEGORIES, recorded_protocol
from kgfact.cost import Meter
from kgfact.errors import KgfactError
from kgfact.guessing import flag_guesses, prior_baselines
from kgfact.models import ModelConfig
from kgfact.prompts import EXEMPLAR, QUERY
from kgfact.qa import sample_per_group, shuffled
from kgfact.rundir import Checkpoints, RunDir, config_json
from kgfact.sampling import (Request, SamplingBackend, SamplingConfig, make_backend,
                             recorded_backend)

STAGE = "slick"
# the settings that choose which questions are labelled; every other one decides their answers
SELECTION = ("relations", "splits", "max_questions_per_relation", "max_exemplar_split_questions")


@dataclass(frozen=True)
class SlickConfig:
    """SliCK's sampling protocol; the defaults are the paper's."""

    n_prompts: int = field(default=10, metadata={"min": 1,
        "help": "Few-shot prompts per question."})
    shots: int = field(default=4, metadata={"min": 0,
        "help": "Exemplars per prompt (same relation)."})
    exemplar_split: str = field(default="dev", metadata={"help": "Split exemplars come from."})
    exemplar_template: str = field(default=EXEMPLAR, metadata={"template": ("question", "answer"),
        "help": "How one exemplar is written: a format string using {question} and {answer} "
                "(and no other field; {{ and }} for literal braces)."})
    query_template: str = field(default=QUERY, metadata={"template": ("question",),
        "help": "How the question is asked after the exemplars: a format string using "
                "{question} (and no other field; {{ and }} for literal braces)."})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={
        "help": "Greedy + samples per prompt (16 at T=0.5, top-k 40)."})
    protocol: Literal["full", "lazy"] = field(default="full", metadata={
        "help": "full: every prompt's greedy answer and samples, as published (measures "
                "P_correct(T>0) and p_correct, the share of all answers right, of every "
                "question); lazy: the same categories from greedy answers plus samples only for "
                "questions greedy never gets right, until the first right one (P_correct(T>0) "
                "and p_correct are then missing except for Unknown questions)."})
    splits: tuple[str, ...] = field(default=("train", "dev", "test"), metadata={
        "nonempty": True, "help": "Which splits' questions to categorise."})
    relations: tuple[str, ...] | None = field(default=None, metadata={"nonempty": True,
        "help": "Relations to categorise; None means every relation with enough exemplars."})
    max_questions_per_relation: int | None = field(default=None, metadata={"min": 1,
        "help": "Sample at most this many questions per relation and split."})
    max_exemplar_split_questions: int | None = field(default=None, metadata={"min": 1,
        "help": "Cap of the exemplar split (dev) per relation, below max_questions_per_relation: "
                "evaluation draws random exemplars from the labelled ones, so a few dozen give "
                "the theory every exemplar's knownness."})
    seed: int = field(default=0, metadata={"min": 0, "help": "Seed for exemplar sets and samples."})

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.sampling.greedy:
            raise KgfactError("SliCK needs the greedy answers: sampling.greedy must be true")
        if self.sampling.n_samples < 1:  # else WeaklyKnown and Unknown cannot be told apart
            raise KgfactError("SliCK needs sampled answers: sampling.n_samples must be >= 1")


def categorize(p_greedy: np.ndarray | float, p_sample: np.ndarray | float) -> np.ndarray:
    """SliCK category of each (P_correct(T=0), P_correct(T>0)) pair.

    >>> categorize([1.0, 0.3, 0.0, 0.0], [0.2, 0.0, 0.1, 0.0]).tolist()
    ['HighlyKnown', 'MaybeKnown', 'WeaklyKnown', 'Unknown']
    """
    g, s = np.asarray(p_greedy, dtype=float), np.asarray(p_sample, dtype=float)
    return np.select([g == 1.0, g > 0.0, s > 0.0], list(CATEGORIES[:3]), CATEGORIES[3])


def exemplar_sets(qa: pd.DataFrame, config: SlickConfig, relations: list[str]
                  ) -> tuple[pd.DataFrame, list[str]]:
    """The fixed exemplar sets: one row per (relation, prompt, position) with the exemplar qid.

    Returns the table and the relations skipped for having fewer than ``shots + 1`` exemplar
    candidates (one spare, so a question can be kept out of its own prompt).
    """
    rows, skipped = [], []
    for pid in relations:
        pool = qa[(qa["relation"] == pid) & (qa["split"] == config.exemplar_split)]
        if len(pool) < config.shots + 1:
            skipped.append(pid)
            continue
        for p in range(config.n_prompts):
            chosen = shuffled(pool, config.seed, "slick-exemplars", pid, str(p))
            for pos, qid in enumerate(chosen["qid"].iloc[:config.shots + 1]):
                # the (shots+1)-th is the spare used when a question meets itself
                rows.append((pid, p, pos, qid))
    return pd.DataFrame(rows, columns=["relation", "prompt", "position", "qid"]), skipped


def build_requests(questions: pd.DataFrame, qa: pd.DataFrame, sets: pd.DataFrame,
                   config: SlickConfig) -> list[Request]:
    """``n_prompts`` requests per question, keyed ``"<qid>#<prompt>"``."""
    by_qid = qa.set_index("qid")
    text = {qid: config.exemplar_template.format(question=row.question, answer=row.answer)
            for qid, row in by_qid.loc[sets["qid"].unique()].iterrows()}
    prompt_sets = {key: list(g.sort_values("position")["qid"])
                   for key, g in sets.groupby(["relation", "prompt"])}
    requests = []
    for qid, pid, question in zip(questions["qid"], questions["relation"], questions["question"]):
        suffix = config.query_template.format(question=question)
        for p in range(config.n_prompts):
            chosen = prompt_sets[(pid, p)]
            exemplars = [q for q in chosen if q != qid][:config.shots]
            requests.append(Request(f"{qid}#{p}", "".join(text[q] for q in exemplars), suffix))
    return requests


def _right(answers: list[list[str]], questions: pd.DataFrame) -> list[np.ndarray]:
    """Whether each answer is right: one boolean array per question (``answers[i]`` answers row
    ``i`` of ``questions``)."""
    lengths = [len(a) for a in answers]
    flat = [a.strip() for row in answers for a in row]
    golds = np.repeat(questions["answer"].to_numpy(), lengths)
    aliases = [a for a, n in zip(questions["aliases"], lengths) for _ in range(n)]
    return np.split(match_many(flat, golds, aliases), np.cumsum(lengths)[:-1])


def score(questions: pd.DataFrame, generations: dict[str, tuple[str, tuple[str, ...]]],
          config: SlickConfig) -> pd.DataFrame:
    """The SliCK table for ``questions`` from their generations (keyed like the requests).

    A question's samples are those of its prompts in order; the lazy protocol leaves the later
    prompts' out, and shares over all samples are then missing (NaN).
    """
    n_p, n_s = config.n_prompts, config.sampling.n_samples
    keys = [[f"{q}#{p}" for p in range(n_p)] for q in questions["qid"]]
    greedy = [[generations[k][0] for k in row] for row in keys]
    samples = [[s for k in row for s in generations[k][1]] for row in keys]
    g_ok = np.array(_right(greedy, questions)).reshape(len(questions), n_p)
    s_ok = _right(samples, questions)
    hits = np.array([ok.sum() for ok in s_ok])
    complete = np.array([len(ok) for ok in s_ok]) == n_p * n_s
    p_g = g_ok.mean(axis=1)
    p_s = np.where(complete, hits / (n_p * n_s), np.nan)
    # every answer pooled: the graded knownness the theory's A(P) can use (theory.md's K)
    p_all = np.where(complete, (g_ok.sum(axis=1) + hits) / (n_p + n_p * n_s), np.nan)
    return pd.DataFrame({
        "qid": questions["qid"].to_numpy(), "relation": questions["relation"].to_numpy(),
        "split": questions["split"].to_numpy(),
        "distribution": questions["distribution"].to_numpy(),
        "p_correct_greedy": p_g, "p_correct_sample": p_s,
        "p_correct": p_all, "category": categorize(p_g, hits),
        "greedy_answers": greedy, "sample_answers": samples,
        "greedy_correct": list(g_ok), "sample_correct": s_ok,
    })


Generations = dict[str, tuple[str, tuple[str, ...]]]


def answer_full(engine: SamplingBackend, questions: pd.DataFrame, requests: list[Request],
                config: SlickConfig, tick: Callable[[int], Any]) -> Generations:
    """The full protocol: every prompt's greedy answer and samples (``tick`` counts questions)."""
    done = {}

    def on_done(gen):
        done[gen.key] = (gen.greedy, gen.samples)
        if len(done) % config.n_prompts == 0:
            tick(1)
    engine.generate(requests, config.sampling, on_done=on_done)
    return done


def answer_lazy(engine: SamplingBackend, questions: pd.DataFrame, requests: list[Request],
                config: SlickConfig, tick: Callable[[int], Any]) -> Generations:
    """The lazy protocol: every prompt's greedy answer, then, for the questions no greedy answer
    got right, the samples of prompt 0, then of prompts 1-2, 3-6, 7-14, ... (rounds that double)
    until one is right. Each round is one batch of every still undecided question: one prompt
    at a time would decide after fewer samples, but its narrow batches cost more time than the
    samples they save (a forward of a few rows costs nearly what one of a hundred does)."""
    n_p = config.n_prompts
    done = {g.key: (g.greedy, ()) for g in engine.generate(
        requests, replace(config.sampling, n_samples=0))}
    greedy = _right([[done[r.key][0] for r in requests[i * n_p:(i + 1) * n_p]]
                     for i in range(len(questions))], questions)
    undecided = [i for i, ok in enumerate(greedy) if not ok.any()]
    tick(len(questions) - len(undecided))
    sampling = replace(config.sampling, greedy=False)
    first = 0
    while first < n_p and undecided:
        prompts = range(first, min(n_p, 2 * first + 1))
        first = prompts.stop
        gens = engine.generate([requests[i * n_p + p] for i in undecided for p in prompts],
                               sampling)
        for g in gens:
            done[g.key] = (done[g.key][0], g.samples)
        right = _right([[s for g in gens[k * len(prompts):(k + 1) * len(prompts)]
                         for s in g.samples] for k in range(len(undecided))],
                       questions.iloc[undecided])
        still = [i for i, ok in zip(undecided, right) if not ok.any()]
        tick(len(undecided) - len(still))
        undecided = still
    tick(len(undecided))
    return done


PROTOCOLS: dict[str, Callable[..., Generations]] = {"full": answer_full, "lazy": answer_lazy}


def select_questions(qa: pd.DataFrame, config: SlickConfig) -> tuple[pd.DataFrame, list[str],
                                                                     pd.DataFrame]:
    """Questions to categorise, relations skipped, and the exemplar sets."""
    unknown_splits = set(config.splits) - {"train", "dev", "test"}
    if unknown_splits:
        raise KgfactError(f"unknown split(s) {', '.join(sorted(unknown_splits))}")
    present = sorted(qa["relation"].unique())
    if config.relations is not None:
        missing = [p for p in config.relations if p not in present]
        if missing:
            raise KgfactError(f"the run has no questions for {', '.join(missing)}; it has "
                              f"{', '.join(present)}")
    relations = list(config.relations) if config.relations is not None else present
    sets, skipped = exemplar_sets(qa, config, relations)
    if config.relations is not None and skipped:
        raise KgfactError(f"too few {config.exemplar_split} questions for {config.shots}-shot "
                          f"exemplars in {', '.join(skipped)} (need {config.shots + 1})")
    keep = [p for p in relations if p not in skipped]
    questions = qa[qa["relation"].isin(keep) & qa["split"].isin(config.splits)]
    dev = questions["split"] == config.exemplar_split
    caps = [config.max_questions_per_relation, config.max_exemplar_split_questions]
    # one cap per group, applied to one seeded order: a larger cap selects a superset, so a
    # run grown by a second call holds what one call with the larger cap would select
    parts = [(questions[~dev], caps[0]),
             (questions[dev], min((c for c in caps if c is not None), default=None))]
    questions = pd.concat([q if cap is None else sample_per_group(
        q, ["relation", "split"], cap, config.seed) for q, cap in parts])
    questions = questions.sort_values(["relation", "split", "qid"]).reset_index(drop=True)
    if questions.empty:
        raise KgfactError("no questions to categorise with these relations and splits")
    return questions, skipped, sets


def _protocol(spec: dict) -> dict:
    """``spec`` without the question selection: what decides every question's answers (a spec
    recorded before the protocol could be chosen ran the full one)."""
    slick = {**spec.get("slick", {}), "protocol": recorded_protocol(spec)}
    return {**spec, "slick": {k: v for k, v in slick.items() if k not in SELECTION}}


def _changes(old: Any, new: Any, path: str = "") -> list[str]:
    """``"key old -> new"`` for each setting that differs (nested dicts by dotted key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [c for k in keys for c in _changes(old.get(k), new.get(k),
                                                  f"{path}.{k}" if path else k)]
    return [] if old == new else [f"{path} {old!r} -> {new!r}"]


def generations(table: pd.DataFrame, config: SlickConfig) -> int:
    """Answers generated for the questions of a SliCK ``table``: every prompt's greedy one,
    and the samples drawn (all of them under the full protocol)."""
    return len(table) * config.n_prompts + int(table["sample_answers"].map(len).sum())


def run_slick(run: RunDir | str | Path, config: SlickConfig, model: ModelConfig | None = None,
              *, backend: str | SamplingBackend = "kgfact", chunk_size: int = 64,
              max_batch: int = 32, backend_options: dict | None = None, force: bool = False,
              progress: bool = True) -> pd.DataFrame:
    """Categorise a run's questions; writes ``slick.parquet`` and ``slick_exemplars.parquet``.

    Work is done in chunks of ``chunk_size`` questions, each checkpointed when it finishes, so a
    killed run resumes losing at most one chunk and ends with the same table: samples are seeded
    per (question, prompt, sample) and greedy answers do not depend on batching.

    A run already labelled under the same protocol (everything but :data:`SELECTION`) grows:
    only the selected questions not yet in its table are labelled and added, and the guess flags,
    baselines and exemplar sets are recomputed over the whole table. Another protocol is refused
    unless ``force``, which labels from scratch.

    ``backend_options`` go to the backend (e.g. ``{"address": ..., "workers": 2}`` for
    ``"ray"``). The config records the engine that decides the answers
    (:func:`kgfact.sampling.recorded_backend`: ``"ray"`` records ``"kgfact"``), so a run can be
    resumed on another backend with identical answers; where it ran is kept under
    ``execution`` in the stage's manifest entry, and every selection the table holds under
    ``selections``.
    """
    run = RunDir.of(run)
    model = model or ModelConfig()
    spec = config_json(slick=config, model=model, backend=recorded_backend(backend))
    previous = run.stage_entry(STAGE)
    complete = previous.get("status") == "complete"
    base = None  # the table this call adds to: a complete one, or the one a killed call grew
    if not force and run.has_table("slick") and (complete or previous.get("grows")):
        if complete and previous.get("config") == spec and run.verified(STAGE):
            return run.read_table("slick")
        changed = _changes(_protocol(previous.get("config") or {}), _protocol(spec))
        if changed:
            raise KgfactError(f"{run.path} already has SliCK results under another protocol "
                              f"({'; '.join(changed)}); use --force to replace them")
        base = run.read_table("slick")
    qa = run.read_table("qa")
    questions, skipped, sets = select_questions(qa, config)
    selection = {k: spec["slick"][k] for k in SELECTION}
    selections = [selection]
    if base is not None:
        questions = questions[~questions["qid"].isin(base["qid"])].reset_index(drop=True)
        if questions.empty and complete:
            return base
        earlier = previous.get("selections") or [
            {k: previous["config"]["slick"].get(k) for k in SELECTION}]
        selections = [s for s in earlier if s != selection] + selections
    # keyed by the questions too: a grown run's chunks depend on what the table already held
    checkpoints = Checkpoints(run, STAGE, {"spec": spec, "questions": list(questions["qid"])})
    with run.stage(STAGE, spec, seed=config.seed) as info:
        run.annotate(STAGE, grows=base is not None, selections=selections)
        engine = make_backend(backend, model, max_batch, **(backend_options or {}))
        info["execution"] = {"backend": backend if isinstance(backend, str)
                             else type(backend).__name__, "options": backend_options or {}}
        answer = PROTOCOLS[config.protocol]
        parts, meter = [], Meter(STAGE, model, backend)
        bar = tqdm(total=len(questions), unit="q", desc="SliCK", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        with bar:
            for start in range(0, len(questions), chunk_size):
                key = f"part-{start // chunk_size:06d}"
                chunk = questions.iloc[start:start + chunk_size]
                if (saved := checkpoints.load(key)) is not None:
                    parts.append(saved)
                    bar.update(len(chunk))
                    continue
                requests = build_requests(chunk, qa, sets, config)
                part = score(chunk, answer(engine, chunk, requests, config, bar.update), config)
                meter.add(generations(part, config))
                checkpoints.save(key, part)
                parts.append(part)
        meter.record()
        kept = [] if base is None else [base.drop(columns=["guess", "guess_kind"],
                                                  errors="ignore")]
        table = pd.concat([*kept, *parts], ignore_index=True).sort_values(
            ["relation", "split", "qid"], ignore_index=True)
        table = flag_guesses(table, qa)
        run.write_table("slick", table)
        run.write_table("slick_exemplars",
                        exemplar_sets(qa, config, sorted(table["relation"].unique()))[0])
        run.write_table("guess_baselines", prior_baselines(qa, table))
        info["report"] = {
            "questions": len(table), "added": len(questions), "skipped_relations": skipped,
            "categories": {r: {c: int(n) for c, n in g["category"].value_counts().items()}
                           for r, g in table.groupby("relation")},
            "known_guesses": int((table["guess"] & (table["category"] != "Unknown")).sum()),
            # what this call generated (the lazy protocol draws only the samples it needs)
            "generations": sum(generations(p, config) for p in parts),
        }
    checkpoints.clear()
    return run.read_table("slick")  # in the form every later reader sees


def run_stage(run: RunDir | str | Path, config: SlickConfig, *, model: ModelConfig | None = None,
              backend: Any = None, progress: bool = True, force: bool = False) -> pd.DataFrame:
    """The SliCK stage (:mod:`kgfact.stages`): :func:`run_slick` with a ``BackendConfig``."""
    if backend is None:
        return run_slick(run, config, model, force=force, progress=progress)
    return run_slick(run, config, model, backend=backend.name,
                     backend_options=backend.options(), chunk_size=backend.chunk_size,
                     max_batch=backend.max_batch, force=force, progress=progress)

