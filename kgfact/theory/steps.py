"""Generated chain-of-thought steps parsed back into edges and checked against ``G``.

A step is a sentence written with a relation's ``statement`` template ("[X] is in the country
[Y].") and entity labels. Templates and steps are compared after
:func:`kgfact.answers.normalize` (so case, punctuation and articles do not matter); the texts in
the subject and object slots are looked up among the normalised labels and aliases of ``G``'s
entities. A label can name several entities (many towns share a name): a step is an edge of ``G``
if any reading of it is, since the model cannot disambiguate a label either.

Status of a step: ``edge`` (an edge of ``G``), ``hallucinated`` (it matches a template but no
reading is an edge of ``G``, including steps naming entities ``G`` does not hold) or ``unparsed``
(no template matches).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from kgfact.answers import normalize
from kgfact.relations import RELATIONS, Relation
from kgfact.theory.graphs import ModelKnowledge

STATUSES = ("edge", "hallucinated", "unparsed")
# Placeholders that survive normalize() unchanged, so a template is normalised like a step.
_X, _Y = "qqsubjectslotqq", "qqobjectslotqq"


@dataclass(frozen=True)
class Step:
    """One step read back: the edge it asserts (where it could be read) and its status."""

    status: str = field(metadata={"help": "edge, hallucinated or unparsed."})
    relation: str | None = field(default=None, metadata={"help": "Relation of the template."})
    subject: str | None = field(default=None, metadata={"help": "Subject id, if resolved."})
    object: str | None = field(default=None, metadata={"help": "Object id, if resolved."})
    subject_text: str | None = field(default=None, metadata={"help": "Normalised subject slot."})
    object_text: str | None = field(default=None, metadata={"help": "Normalised object slot."})


class StepParser:
    """Reads CoT steps back into edges of ``G``.

    Parameters
    ----------
    knowledge : ModelKnowledge
        ``G`` (and the codec).
    entities : pandas.DataFrame
        ``id``, ``label``, ``aliases``.
    relations : iterable of Relation, optional
        Templates to try; every registered relation by default.
    """

    def __init__(self, knowledge: ModelKnowledge, entities: pd.DataFrame,
                 relations: Iterable[Relation] | None = None) -> None:
        self.knowledge = knowledge
        names: defaultdict[str, set[str]] = defaultdict(set)
        for eid, label, aliases in zip(entities["id"], entities["label"], entities["aliases"]):
            for name in [label, *(aliases if aliases is not None else ())]:
                if isinstance(name, str) and normalize(name):
                    names[normalize(name)].add(eid)
        self.names = {k: sorted(v) for k, v in names.items()}
        rels = list(relations) if relations is not None else [RELATIONS.get(p) for p in RELATIONS]
        self.templates = []
        for rel in rels:
            pattern = re.escape(normalize(rel.statement.replace("[X]", _X).replace("[Y]", _Y)))
            pattern = pattern.replace(_X, "(?P<x>.+?)").replace(_Y, "(?P<y>.+?)")
            self.templates.append((rel.pid, re.compile(pattern)))

    def parse(self, text: str) -> Step:
        """The edge ``text`` asserts and whether it is in ``G``."""
        norm = normalize(text) if isinstance(text, str) else ""
        matches = [(pid, m["x"], m["y"]) for pid, rx in self.templates
                   if (m := rx.fullmatch(norm)) is not None]
        if not matches:
            return Step("unparsed")
        codec = self.knowledge.codec
        readings = [(pid, s, o, x, y) for pid, x, y in matches
                    for s in self.names.get(x, ()) for o in self.names.get(y, ())]
        if readings:
            frame = pd.DataFrame(readings, columns=["relation", "subject", "object", "x", "y"])
            in_g = self.knowledge.graph.contains(codec.encode_frame(frame))
            pid, s, o, x, y = readings[int(np.argmax(in_g))]
            return Step("edge" if in_g.any() else "hallucinated", pid, s, o, x, y)
        pid, x, y = matches[0]
        first = (self.names.get(x) or [None])[0], (self.names.get(y) or [None])[0]
        return Step("hallucinated", pid, first[0], first[1], x, y)


def verify_steps(predictions: pd.DataFrame, parser: StepParser,
                 prompt_edges: pd.DataFrame) -> pd.DataFrame:
    """The step-verification table: one row per generated CoT step.

    Parameters
    ----------
    predictions : pandas.DataFrame
        ``model``, ``set``, ``checkpoint``, ``prompt_id``, ``qid``, ``cot_steps`` (list of str).
    parser : StepParser
        Reads steps into edges.
    prompt_edges : pandas.DataFrame
        Flagged prompt edges (``prompt_id``, ``code``, optionally ``qid`` for an edge stated only
        in that query's prompt), to tell steps copied from the prompt.

    Returns
    -------
    pandas.DataFrame
        ``model``, ``set``, ``checkpoint``, ``prompt_id``, ``qid``, ``step`` (position),
        ``text``, ``status``, ``relation``, ``subject``, ``object``, ``subject_text``,
        ``object_text``, ``in_graph``, ``in_known`` (``K_kn``), ``in_prompt`` (the prompt states
        the same edge) and ``hallucinated`` (status is not ``edge``: unparsed steps included).
    """
    keys = ["model", "set", "checkpoint", "prompt_id", "qid"]
    steps = (predictions[keys + ["cot_steps"]].reset_index(drop=True).explode("cot_steps")
             .dropna(subset=["cot_steps"]))
    steps = steps.rename(columns={"cot_steps": "text"})
    steps.insert(len(keys), "step", steps.groupby(level=0).cumcount())
    steps = steps.reset_index(drop=True)
    texts = steps["text"].unique()
    # explicit columns: a run whose CoT answers state no step parses nothing
    parsed = pd.DataFrame([parser.parse(t).__dict__ for t in texts], index=texts,
                          columns=[f.name for f in fields(Step)])
    steps = pd.concat([steps, parsed.loc[steps["text"]].reset_index(drop=True)], axis=1)
    codec = parser.knowledge.codec
    codes = codec.encode(codec.entity(steps["subject"].fillna("")),
                         codec.relation(steps["relation"].fillna("")),
                         codec.entity(steps["object"].fillna("")))
    # an edge with a qid is stated only in that query's prompt (a path hint), others in all
    edges = prompt_edges if "qid" in prompt_edges else prompt_edges.assign(qid=None)
    own = edges["qid"].notna()
    stated = set(zip(edges.loc[~own, "prompt_id"], edges.loc[~own, "code"]))
    stated_for = set(zip(edges.loc[own, "prompt_id"], edges.loc[own, "qid"],
                         edges.loc[own, "code"]))
    steps["in_graph"] = steps["status"].to_numpy() == "edge"
    steps["in_known"] = parser.knowledge.known.contains(codes)
    steps["in_prompt"] = [(p, c) in stated or (p, q, c) in stated_for
                          for p, q, c in zip(steps["prompt_id"], steps["qid"], codes)]
    steps["hallucinated"] = ~steps["in_graph"]
    return steps
