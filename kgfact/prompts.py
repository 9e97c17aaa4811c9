"""Prompt modes, exemplar selection strategies and chain-of-thought steps built from KG paths.

A prompt is a shared prefix (the exemplars) plus the query. A prompt mode (registry
:data:`PROMPT_MODES`, entries :class:`PromptMode`) owns its format: how its query and exemplars
are written and how its generations are read, and says whether it has exemplars and whether
they state reasoning steps, which is all evaluation and the theory ask of a mode:

- ``zero-shot``: the question alone, ``Q: {question}\\nA:`` (the format SliCK and fine-tuning
  use);
- ``few-shot``: ``shots`` exemplars ``Q: ...\\nA: {answer}`` first;
- ``cot`` (:class:`ChainOfThought`): the same exemplars, each answered with reasoning steps
  and then ``So the answer is {answer}.``; the model's final answer is parsed from its
  generation and its steps are kept (the theory stage checks them against the graph).

A new mode is one ``PROMPT_MODES.register(name, mode)`` of an instance: of :class:`PromptMode`
for the direct format, or of a subclass that overrides :meth:`PromptMode.query`,
:meth:`PromptMode.exemplar` and :meth:`PromptMode.parse` for its own.

CoT steps of an exemplar ``(s, r, o)`` come from the knowledge graph: the edges of the shortest
directed path from ``s`` to ``o`` of at most two hops other than the exemplar's own edge; where
there is none, up to two supporting facts about ``s`` (its other edges). Each step is the
relation's ``statement`` sentence from the relation registry ("Lyon is in the country France.").

Exemplar strategies (registry :data:`STRATEGIES`, entries :class:`Strategy`) say where a
query's exemplars come from; each returns candidate questions, from which fixed seeded sets are
drawn per relation (or, for a per-query strategy, per query):

- ``random``: dev questions of the query's relation (SliCK's choice); those with a SliCK record
  when the relation has any, so the theory knows every exemplar's knownness where SliCK labelled
  only part of dev;
- ``known`` / ``unknown``: the same, restricted to those the base model knows / does not know
  (SliCK category of the dev question);
- ``from-ft``: questions of the evaluated model's fine-tuning set with the query's relation (of
  any relation when the set has none, as for out-of-distribution relations);
- ``disjoint``: train questions of the query's relation that are not in the fine-tuning set
  (dev questions for relations without a train split);
- ``other-relation``: dev questions of every other relation;
- ``neighbourhood`` (per query): dev and train questions of the query's relation with a SliCK
  record and in no fine-tuning set of the run, that share an entity with the 1-hop
  neighbourhood of the query's subject ``s`` in ``G`` (edges followed either way, ``s``
  included) and never name the query's answer ``o`` (so never the query itself);
- ``path-hint`` / ``side-steps`` (modes with steps only, such as CoT): the exemplars of
  ``other-relation``, and the model's answer starts with one fact about ``s``
  (:class:`QueryGraph`): the first hop ``s -> m`` of a 2-hop path to ``o`` whose last hop
  ``m -> o`` the model knows, or a fact ``s -> m'`` whose ``m'`` is not adjacent to ``o``.
  Only queries that have both get either.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from kgfact.answers import extract_answer, normalize
from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.registry import Registry
from kgfact.relations import RELATIONS

# the one home of the prompt format every stage writes (SliCK, fine-tuning, evaluation)
QUERY = "Q: {question}\nA:"
EXEMPLAR = QUERY + " {answer}\n\n"  # a few-shot exemplar: the query, its answer, a blank line
TARGET = " {answer}\n"  # what fine-tuning teaches after QUERY (the newline ends the answer)
IDK = "I don't know"  # the abstention: relabelled answers and what evaluation counts as one
ANSWER_CUE = "So the answer is"
_FINAL = re.compile(rf"{ANSWER_CUE}\s*(.*)$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PromptMode:
    """A prompt mode: what its prompts hold, and its format.

    The fields are what the rest of kgfact asks of a mode. A mode without exemplars states no
    fact, so the theory takes it as its zero-shot baseline (``A = 0``); a mode whose exemplars
    state steps gets their graph edges in its prompts (``prompt_edges`` source ``cot``), the
    hint-bearing strategies, and its answers' steps verified by the theory stage. The methods
    are the format; these write the direct one (``Q: {question}\\nA: {answer}``).
    """

    exemplars: bool = field(metadata={"help": "Whether the prompt starts with exemplars."})
    steps: bool = field(default=False, metadata={
        "help": "Whether its exemplars state reasoning steps from the knowledge graph before "
                "their answers (and its answers are read for steps)."})
    max_new_tokens: int = field(default=16, metadata={"min": 1,
        "help": "Longest generation in tokens."})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.steps and not self.exemplars:
            raise KgfactError("a prompt mode that states steps needs exemplars to state them in")

    def query(self, question: str, start: str | None = None) -> str:
        """What the model answers: ``question``, and ``start``, the first words of its answer
        where the prompt gives them (a hint's step)."""
        text = QUERY.format(question=question)
        return f"{text} {start}" if start else text

    def exemplar(self, question: str, answer: str, steps: str | None = None) -> str:
        """One exemplar, ``steps`` its reasoning as sentences (given to modes with steps)."""
        return EXEMPLAR.format(question=question, answer=answer)

    def parse(self, generation: str) -> tuple[str, list[str]]:
        """The final answer of ``generation`` and its reasoning steps (none: a direct answer)."""
        return extract_answer(generation), []


@dataclass(frozen=True)
class ChainOfThought(PromptMode):
    """Exemplars reasoning before ``So the answer is {answer}.``; answers read the same way."""

    def exemplar(self, question: str, answer: str, steps: str | None = None) -> str:
        reasoning = f"{steps} " if steps else ""
        return f"{self.query(question)} {reasoning}{ANSWER_CUE} {answer}.\n\n"

    def parse(self, generation: str) -> tuple[str, list[str]]:
        """The answer after ``So the answer is`` and the sentences before it; a generation
        without the cue is a direct answer with no steps.

        Examples
        --------
        >>> cot = PROMPT_MODES.get("cot")
        >>> cot.parse(" Lyon is in the country France. So the answer is France.")
        ('France', ['Lyon is in the country France.'])
        """
        text = generation.strip()
        found = _FINAL.search(text)
        if not found:
            return super().parse(text)
        before = text[:found.start()].strip()
        return extract_answer(found.group(1)), [s for s in _SENTENCE_END.split(before) if s]


PROMPT_MODES: Registry[PromptMode] = Registry("prompt mode")
PROMPT_MODES.register("zero-shot", PromptMode(exemplars=False))
PROMPT_MODES.register("few-shot", PromptMode(exemplars=True))
PROMPT_MODES.register("cot", ChainOfThought(exemplars=True, steps=True, max_new_tokens=64))


def modes_with(modes: pd.Series, flag: str) -> pd.Series:
    """Per row of ``modes`` (prompt mode names), the boolean field ``flag`` (``"exemplars"``,
    ``"steps"``) of its registered :class:`PromptMode`; an unregistered mode is a one-line
    error."""
    value = {m: getattr(PROMPT_MODES.get(m), flag) for m in pd.unique(modes)}
    return modes.map(value).astype(bool)


@dataclass(frozen=True)
class StrategyContext:
    """What an exemplar strategy may draw from."""

    qa: pd.DataFrame = field(metadata={"help": "The run's questions."})
    known: pd.Series = field(metadata={
        "help": "Base-model knowledge per qid (True = not Unknown), where SliCK labelled it."})
    ft_set: pd.DataFrame | None = field(default=None, metadata={
        "help": "The evaluated model's fine-tuning set (None for the base model)."})
    ft_qids: frozenset[str] = field(default=frozenset(), metadata={
        "help": "Qids of every fine-tuning set of the run."})
    graph: QueryGraph | None = field(default=None, metadata={
        "help": "Graph lookups of the per-query strategies."})


Pool = Callable[[StrategyContext, str], pd.DataFrame]
ForQuery = Callable[[StrategyContext, pd.DataFrame, Any], pd.DataFrame]
#: the kinds of hint (:meth:`QueryGraph.hints`): a path's first hop toward the answer, and a
#: fact that leads nowhere near it
HINTS = ("path", "side")


@dataclass(frozen=True)
class Strategy:
    """An exemplar strategy: its candidate exemplars, and how its prompts are built from them."""

    pool: Pool = field(metadata={"help": "Candidate exemplar questions of a relation."})
    set_dependent: bool = field(default=False, metadata={
        "help": "Exemplars depend on the evaluated model's fine-tuning set (the base model, "
                "which has none, gets no prompt)."})
    for_query: ForQuery | None = field(default=None, metadata={
        "help": "Narrows the pool to one query's candidates (a query row with qid, subject, "
                "relation, object): per-query prompts; None: prompts shared by the relation."})
    hint: str | None = field(default=None, metadata={
        "help": "Modes with steps only: the model's answer starts with this fact about the "
                "query's subject (one of HINTS); None: no hint."})
    draws_as: str | None = field(default=None, metadata={
        "help": "Strategy whose seeded draws it shares (the same exemplar sets, so the same "
                "prefixes); None: its own."})

    def __post_init__(self) -> None:
        if self.hint is not None and self.hint not in HINTS:
            raise KgfactError(f"unknown hint {self.hint!r}; use {', '.join(HINTS)}")

    def __call__(self, ctx: StrategyContext, relation: str) -> pd.DataFrame:
        """The candidate exemplars of ``relation``."""
        return self.pool(ctx, relation)

    @property
    def per_query(self) -> bool:
        """Whether each query gets its own exemplar sets."""
        return self.for_query is not None


STRATEGIES: Registry[Strategy] = Registry("exemplar strategy")


def _dev(ctx: StrategyContext, relation: str) -> pd.DataFrame:
    qa = ctx.qa
    return qa[(qa["relation"] == relation) & (qa["split"] == "dev")]


def _random(ctx: StrategyContext, relation: str) -> pd.DataFrame:
    dev = _dev(ctx, relation)
    labelled = dev[dev["qid"].isin(ctx.known.index)]
    return labelled if len(labelled) else dev


def _by_knowledge(known: bool) -> Pool:
    def strategy(ctx: StrategyContext, relation: str) -> pd.DataFrame:
        dev = _dev(ctx, relation)
        return dev[dev["qid"].map(ctx.known).eq(known)]
    return strategy


def _from_ft(ctx: StrategyContext, relation: str) -> pd.DataFrame:
    if ctx.ft_set is None:
        return ctx.qa.iloc[:0]
    mine = ctx.qa[ctx.qa["qid"].isin(ctx.ft_set["qid"])]
    same = mine[mine["relation"] == relation]
    return same if len(same) else mine


def _disjoint(ctx: StrategyContext, relation: str) -> pd.DataFrame:
    qa = ctx.qa
    train = qa[(qa["relation"] == relation) & (qa["split"] == "train")]
    if train.empty:
        return _dev(ctx, relation)
    used = ctx.ft_set["qid"] if ctx.ft_set is not None else []
    return train[~train["qid"].isin(used)]


def _other_relation(ctx: StrategyContext, relation: str) -> pd.DataFrame:
    qa = ctx.qa
    return qa[(qa["relation"] != relation) & (qa["split"] == "dev")]


def _labelled_unused(ctx: StrategyContext, relation: str) -> pd.DataFrame:
    """Dev and train questions of ``relation`` that SliCK labelled (the theory knows their
    knownness) and no fine-tuning set of the run holds (``ft_overlap`` does not move)."""
    qa = ctx.qa
    rows = qa[(qa["relation"] == relation) & qa["split"].isin(["dev", "train"])]
    return rows[rows["qid"].map(ctx.known).notna() & ~rows["qid"].isin(ctx.ft_qids)]


def _near_query(ctx: StrategyContext, pool: pd.DataFrame, query: Any) -> pd.DataFrame:
    """The candidates sharing an entity with the query subject's 1-hop neighbourhood that never
    name the answer ``o``: not the query's own question or edge either, whose object is ``o``."""
    near = ctx.graph.neighbourhood(query.subject)
    # object dtype: isin on Arrow strings walks the wanted values in Python, per call
    subject, obj = pool["subject"].astype(object), pool["object"].astype(object)
    touches = subject.isin(near) | obj.isin(near)
    return pool[touches & (subject != query.object) & (obj != query.object)]


for _name, _strategy in (
        ("random", Strategy(_random)), ("known", Strategy(_by_knowledge(True))),
        ("unknown", Strategy(_by_knowledge(False))),
        ("from-ft", Strategy(_from_ft, set_dependent=True)),
        ("disjoint", Strategy(_disjoint, set_dependent=True)),
        ("other-relation", Strategy(_other_relation)),
        ("neighbourhood", Strategy(_labelled_unused, for_query=_near_query)),
        ("path-hint", Strategy(_other_relation, hint="path", draws_as="other-relation")),
        ("side-steps", Strategy(_other_relation, hint="side", draws_as="other-relation"))):
    STRATEGIES.register(_name, _strategy)
#: names of the strategies above whose exemplars depend on the evaluated model's fine-tuning set
SET_DEPENDENT = frozenset(n for n in STRATEGIES if STRATEGIES.get(n).set_dependent)


class StepWriter:
    """Chain-of-thought steps for exemplar edges, from the knowledge graph's tables.

    Parameters
    ----------
    triples : DataFrame
        ``subject``, ``relation``, ``object``.
    entities : DataFrame
        ``id``, ``label``.
    max_steps : int
        Most steps per exemplar.
    """

    def __init__(self, triples: pd.DataFrame, entities: pd.DataFrame, max_steps: int = 2) -> None:
        stated = triples[triples["relation"].isin(list(RELATIONS))]
        self.labels = entities.set_index("id")["label"].dropna().to_dict()
        stated = stated[stated["subject"].isin(self.labels) & stated["object"].isin(self.labels)]
        self.out: dict[str, list[tuple[str, str]]] = {}
        for s, r, o in sorted(zip(stated["subject"], stated["relation"], stated["object"])):
            self.out.setdefault(s, []).append((r, o))
        self.max_steps = max_steps

    def steps(self, subject: str, relation: str, obj: str) -> list[tuple[str, str, str]]:
        """The step edges for exemplar ``(subject, relation, obj)`` (see the module docstring)."""
        first = self.out.get(subject, [])
        direct = [(subject, r, o) for r, o in first if o == obj and r != relation]
        if direct:
            return direct[:1]
        for r1, mid in first:
            if mid == obj:
                continue
            for r2, end in self.out.get(mid, []):
                if end == obj:
                    return [(subject, r1, mid), (mid, r2, obj)]
        return [(subject, r, o) for r, o in first if r != relation][:self.max_steps]

    def text(self, edges: list[tuple[str, str, str]]) -> str:
        """The steps as sentences on one line."""
        return " ".join(RELATIONS.get(r).state(self.labels[s], self.labels[o])
                        for s, r, o in edges)


class QueryGraph:
    """The graph lookups of the per-query strategies and hints, each built on first use and
    then shared by every query of an evaluation.

    Parameters
    ----------
    triples : DataFrame
        ``subject``, ``relation``, ``object``: the knowledge graph ``G``.
    qa : DataFrame
        ``qid``, ``subject``, ``relation``, ``object``: the edge each question asks about.
    known : Series
        Base-model knowledge per qid (True = not Unknown), where SliCK labelled it: ``K_kn``
        is the edges of the known questions.
    steps : StepWriter
        Its out-edges (registry relations between labelled entities) are the facts a hint can
        state.
    """

    def __init__(self, triples: pd.DataFrame, qa: pd.DataFrame, known: pd.Series,
                 steps: StepWriter) -> None:
        self._triples, self._qa, self._known, self.steps = triples, qa, known, steps

    @cached_property
    def neighbours(self) -> dict[str, set[str]]:
        """Each entity's neighbours in ``G``, edges followed either way."""
        out: dict[str, set[str]] = {}
        for s, o in zip(self._triples["subject"].tolist(), self._triples["object"].tolist()):
            out.setdefault(s, set()).add(o)
            out.setdefault(o, set()).add(s)
        return out

    @cached_property
    def known_into(self) -> dict[str, set[str]]:
        """Per entity ``o``, the subjects ``m`` of the ``K_kn`` edges ``m -> o``."""
        qa = self._qa[self._qa["qid"].map(self._known).eq(True)]
        out: dict[str, set[str]] = {}
        for m, o in zip(qa["subject"].tolist(), qa["object"].tolist()):
            out.setdefault(o, set()).add(m)
        return out

    def neighbourhood(self, entity: str) -> set[str]:
        """``entity`` and its neighbours in ``G`` (1 hop, either way)."""
        return {entity} | self.neighbours.get(entity, set())

    def hints(self, subject: str, obj: str) -> dict[str, list[tuple[str, str, str]]]:
        """Candidate hints for a query ``(subject, r, obj)``, by kind, each a statable edge
        ``subject -> m`` of ``G`` with ``m`` neither ``subject`` nor ``obj`` (so never the query
        edge): ``path`` where ``m -> obj`` is in ``K_kn`` (the first hop of a 2-hop path whose
        last hop the model knows), ``side`` where ``m`` is not adjacent to ``obj`` either way
        (``obj`` stays out of reach within the 2 hops of ``hop_support``)."""
        first = [(r, m) for r, m in self.steps.out.get(subject, []) if m not in (subject, obj)]
        into, near = self.known_into.get(obj, set()), self.neighbours.get(obj, set())
        return {"path": [(subject, r, m) for r, m in first if m in into],
                "side": [(subject, r, m) for r, m in first if m not in near]}


def is_abstention(answer: str, idk: str) -> bool:
    """Whether ``answer`` says "I don't know" (``idk``), after answer normalisation."""
    return bool(answer) and normalize(answer) == normalize(idk)
