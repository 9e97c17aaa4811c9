"""SliCK knowledge categories (Gekhman et al., EMNLP 2024), exactly as the paper defines them.

For each question, ``n_prompts`` (10) few-shot prompts are built from fixed exemplar sets of
``shots`` (4) questions of the same relation, drawn from the dev split; each prompt is answered
once greedily and ``n_samples`` (16) times at temperature 0.5 with top-k 40. Then

- ``P_correct(T=0)`` = share of the 10 greedy answers that are correct,
- ``P_correct(T>0)`` = share of the 160 sampled answers that are correct,

and the category is **HighlyKnown** if ``P(T=0) = 1``; **MaybeKnown** if ``0 < P(T=0) < 1``;
**WeaklyKnown** if ``P(T=0) = 0`` and ``P(T>0) > 0``; **Unknown** if both are 0.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kgfact.answers import match_many
from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.guessing import flag_guesses, prior_baselines
from kgfact.models import ModelConfig
from kgfact.prompts import EXEMPLAR, QUERY
from kgfact.qa import sample_per_group, shuffled
from kgfact.rundir import Checkpoints, RunDir, config_json
from kgfact.sampling import (Request, SamplingBackend, SamplingConfig, make_backend,
                             recorded_backend)

STAGE = "slick"
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


@dataclass(frozen=True)
class SlickConfig:
    """SliCK's sampling protocol; the defaults are the paper's."""

    n_prompts: int = field(default=10, metadata={"min": 1,
        "help": "Few-shot prompts per question."})
    shots: int = field(default=4, metadata={"min": 0,
        "help": "Exemplars per prompt (same relation)."})
    exemplar_split: str = field(default="dev", metadata={"help": "Split exemplars come from."})
    exemplar_template: str = field(default=EXEMPLAR, metadata={
        "help": "How one exemplar is written ({question}, {answer})."})
    query_template: str = field(default=QUERY, metadata={
        "help": "How the question is asked after the exemplars ({question})."})
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={
        "help": "Greedy + samples per prompt (16 at T=0.5, top-k 40)."})
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


def score(questions: pd.DataFrame, generations: dict[str, tuple[str, tuple[str, ...]]],
          config: SlickConfig) -> pd.DataFrame:
    """The SliCK table for ``questions`` from their generations (keyed like the requests)."""
    n_p, n_s = config.n_prompts, config.sampling.n_samples
    greedy = [[generations[f"{q}#{p}"][0] for p in range(n_p)] for q in questions["qid"]]
    samples = [[s for p in range(n_p) for s in generations[f"{q}#{p}"][1]]
               for q in questions["qid"]]

    def correct(answers: list[list[str]], per: int) -> np.ndarray:
        flat = [a.strip() for row in answers for a in row]
        golds = np.repeat(questions["answer"].to_numpy(), per)
        aliases = [a for a in questions["aliases"] for _ in range(per)]
        return match_many(flat, golds, aliases).reshape(len(questions), per)

    g_ok = correct(greedy, n_p)
    s_ok = correct(samples, n_p * n_s) if n_s else np.zeros((len(questions), 0), dtype=bool)
    p_g = g_ok.mean(axis=1)
    p_s = s_ok.mean(axis=1) if n_s else np.zeros(len(questions))
    # every answer pooled: the graded knownness the theory's A(P) can use (theory.md's K)
    p_all = (g_ok.sum(axis=1) + s_ok.sum(axis=1)) / (g_ok.shape[1] + s_ok.shape[1])
    return pd.DataFrame({
        "qid": questions["qid"].to_numpy(), "relation": questions["relation"].to_numpy(),
        "split": questions["split"].to_numpy(),
        "distribution": questions["distribution"].to_numpy(),
        "p_correct_greedy": p_g, "p_correct_sample": p_s,
        "p_correct": p_all, "category": categorize(p_g, p_s),
        "greedy_answers": greedy, "sample_answers": samples,
        "greedy_correct": list(g_ok), "sample_correct": list(s_ok),
    })


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
    if config.max_questions_per_relation is not None:
        questions = sample_per_group(questions, ["relation", "split"],
                                     config.max_questions_per_relation, config.seed)
    if config.max_exemplar_split_questions is not None:
        dev = questions["split"] == config.exemplar_split
        questions = pd.concat([questions[~dev], sample_per_group(
            questions[dev], ["relation", "split"], config.max_exemplar_split_questions,
            config.seed)])
    questions = questions.sort_values(["relation", "split", "qid"]).reset_index(drop=True)
    if questions.empty:
        raise KgfactError("no questions to categorise with these relations and splits")
    return questions, skipped, sets


def run_slick(run: RunDir | str | Path, config: SlickConfig, model: ModelConfig | None = None,
              *, backend: str | SamplingBackend = "kgfact", chunk_size: int = 64,
              max_batch: int = 32, backend_options: dict | None = None, force: bool = False,
              progress: bool = True) -> pd.DataFrame:
    """Categorise a run's questions; writes ``slick.parquet`` and ``slick_exemplars.parquet``.

    Work is done in chunks of ``chunk_size`` questions, each checkpointed when it finishes, so a
    killed run resumes losing at most one chunk and ends with the same table: samples are seeded
    per (question, prompt, sample) and greedy answers do not depend on batching.

    ``backend_options`` go to the backend (e.g. ``{"address": ..., "workers": 2}`` for
    ``"ray"``). The config records the engine that decides the answers
    (:func:`kgfact.sampling.recorded_backend`: ``"ray"`` records ``"kgfact"``), so a run can be
    resumed on another backend with identical answers; where it ran is kept under
    ``execution`` in the stage's manifest entry.
    """
    run = RunDir.of(run)
    model = model or ModelConfig()
    spec = config_json(slick=config, model=model, backend=recorded_backend(backend))
    previous = run.manifest().get("stages", {}).get(STAGE, {})
    if previous.get("status") == "complete" and not force and run.has_table("slick"):
        if previous.get("config") == spec:
            return run.read_table("slick")
        raise KgfactError(f"{run.path} already has SliCK results from another configuration; "
                          "use --force to replace them")
    qa = run.read_table("qa")
    questions, skipped, sets = select_questions(qa, config)
    checkpoints = Checkpoints(run, STAGE, spec)
    with run.stage(STAGE, spec, seed=config.seed) as info:
        engine = make_backend(backend, model, max_batch, **(backend_options or {}))
        info["execution"] = {"backend": backend if isinstance(backend, str)
                             else type(backend).__name__, "options": backend_options or {}}
        parts = []
        chunks = range(0, len(questions), chunk_size)
        bar = tqdm(total=len(questions), unit="q", desc="SliCK", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        with bar:
            for start in chunks:
                key = f"part-{start // chunk_size:06d}"
                chunk = questions.iloc[start:start + chunk_size]
                if (saved := checkpoints.load(key)) is not None:
                    parts.append(saved)
                    bar.update(len(chunk))
                    continue
                requests = build_requests(chunk, qa, sets, config)
                done = {}

                def on_done(gen, _n=config.n_prompts):
                    done[gen.key] = (gen.greedy, gen.samples)
                    if len(done) % _n == 0:
                        bar.update(1)
                engine.generate(requests, config.sampling, on_done=on_done)
                part = score(chunk, done, config)
                checkpoints.save(key, part)
                parts.append(part)
        table = flag_guesses(pd.concat(parts, ignore_index=True), qa)
        run.write_table("slick", table)
        run.write_table("slick_exemplars", sets)
        run.write_table("guess_baselines", prior_baselines(qa, table))
        info["report"] = {
            "questions": len(table), "skipped_relations": skipped,
            "categories": {r: {c: int(n) for c, n in g["category"].value_counts().items()}
                           for r, g in table.groupby("relation")},
            "known_guesses": int((table["guess"] & (table["category"] != "Unknown")).sum()),
            "generations": len(table) * config.n_prompts * (config.sampling.n_samples + 1),
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

