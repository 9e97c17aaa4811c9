"""Prompt modes, exemplar selection strategies and chain-of-thought steps built from KG paths.

A prompt is a shared prefix (the exemplars) plus the question ``Q: {question}\\nA:``, the format
SliCK and fine-tuning use. Modes (registry :data:`PROMPT_MODES`):

- ``zero-shot``: the question alone;
- ``few-shot``: ``shots`` exemplars ``Q: ...\\nA: {answer}`` first;
- ``cot``: the same exemplars, each answered with reasoning steps and then
  ``So the answer is {answer}.``; the model's final answer is parsed from its generation and its
  steps are kept (the theory stage checks them against the graph).

CoT steps of an exemplar ``(s, r, o)`` come from the knowledge graph: the edges of the shortest
directed path from ``s`` to ``o`` of at most two hops other than the exemplar's own edge; where
there is none, up to two supporting facts about ``s`` (its other edges). Each step is the
relation's ``statement`` sentence from the relation registry ("Lyon is in the country France.").

Exemplar strategies (registry :data:`STRATEGIES`) say where a query's exemplars come from; each
returns candidate questions, from which fixed seeded sets are drawn per relation:

- ``random``: dev questions of the query's relation (SliCK's choice); those with a SliCK record
  when the relation has any, so the theory knows every exemplar's knownness where SliCK labelled
  only part of dev;
- ``known`` / ``unknown``: the same, restricted to those the base model knows / does not know
  (SliCK category of the dev question);
- ``from-ft``: questions of the evaluated model's fine-tuning set with the query's relation (of
  any relation when the set has none, as for out-of-distribution relations);
- ``disjoint``: train questions of the query's relation that are not in the fine-tuning set
  (dev questions for relations without a train split);
- ``other-relation``: dev questions of every other relation.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from kgfact.answers import extract_answer, normalize
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
    """How a query is prompted."""

    name: str = field(metadata={"help": "Registry name."})
    exemplars: bool = field(metadata={"help": "Whether the prompt starts with exemplars."})
    cot: bool = field(metadata={"help": "Whether exemplars reason before answering."})
    max_new_tokens: int = field(metadata={"help": "Longest generation in tokens."})


PROMPT_MODES: Registry[PromptMode] = Registry("prompt mode")
for _mode in (PromptMode("zero-shot", False, False, 16), PromptMode("few-shot", True, False, 16),
              PromptMode("cot", True, True, 64)):
    PROMPT_MODES.register(_mode.name, _mode)


@dataclass(frozen=True)
class StrategyContext:
    """What an exemplar strategy may draw from."""

    qa: pd.DataFrame = field(metadata={"help": "The run's questions."})
    known: pd.Series = field(metadata={
        "help": "Base-model knowledge per qid (True = not Unknown), where SliCK labelled it."})
    ft_set: pd.DataFrame | None = field(default=None, metadata={
        "help": "The evaluated model's fine-tuning set (None for the base model)."})


Strategy = Callable[[StrategyContext, str], pd.DataFrame]
STRATEGIES: Registry[Strategy] = Registry("exemplar strategy")
# strategies whose exemplars depend on the evaluated model's fine-tuning set
SET_DEPENDENT = frozenset({"from-ft", "disjoint"})


def _dev(ctx: StrategyContext, relation: str) -> pd.DataFrame:
    qa = ctx.qa
    return qa[(qa["relation"] == relation) & (qa["split"] == "dev")]


def _random(ctx: StrategyContext, relation: str) -> pd.DataFrame:
    dev = _dev(ctx, relation)
    labelled = dev[dev["qid"].isin(ctx.known.index)]
    return labelled if len(labelled) else dev


def _by_knowledge(known: bool) -> Strategy:
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


for _name, _strategy in (("random", _random), ("known", _by_knowledge(True)),
                         ("unknown", _by_knowledge(False)), ("from-ft", _from_ft),
                         ("disjoint", _disjoint), ("other-relation", _other_relation)):
    STRATEGIES.register(_name, _strategy)


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


def exemplar_text(question: str, answer: str, steps: str | None = None) -> str:
    """One exemplar; ``steps`` (CoT) come before ``So the answer is``."""
    if steps is None:
        return EXEMPLAR.format(question=question, answer=answer)
    reasoning = f"{steps} " if steps else ""
    return f"{QUERY.format(question=question)} {reasoning}{ANSWER_CUE} {answer}.\n\n"


def parse_generation(generation: str, cot: bool) -> tuple[str, list[str]]:
    """The final answer and (for CoT) the reasoning sentences of a generation.

    A CoT generation without ``So the answer is`` is taken as a direct answer with no steps.

    Examples
    --------
    >>> parse_generation(" Lyon is in the country France. So the answer is France.", True)
    ('France', ['Lyon is in the country France.'])
    """
    text = generation.strip()
    if cot:
        found = _FINAL.search(text)
        if found:
            before = text[:found.start()].strip()
            steps = [s for s in _SENTENCE_END.split(before) if s]
            return extract_answer(found.group(1)), steps
    return extract_answer(text), []


def is_abstention(answer: str, idk: str) -> bool:
    """Whether ``answer`` says "I don't know" (``idk``), after answer normalisation."""
    return bool(answer) and normalize(answer) == normalize(idk)
