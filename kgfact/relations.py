"""The relation registry: every Wikidata property kgfact can turn into questions.

The registry is data (``relations.toml`` beside this module): property id, label, question
template, answer type and the chain-of-thought statement that asserts an edge. Look relations up
in :data:`RELATIONS`, or several at once with :func:`get_relations`: a malformed id, or every
unknown one, is a one-line :class:`~kgfact.errors.KgfactError`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources

from kgfact.errors import KgfactError
from kgfact.registry import Registry
from kgfact.wikidata import PID_RE


@dataclass(frozen=True)
class Relation:
    """A Wikidata property with the text kgfact needs to ask and assert it."""

    pid: str = field(metadata={"help": "Wikidata property id, e.g. 'P17'."})
    label: str = field(metadata={"help": "Wikidata English label of the property."})
    answer_type: str = field(metadata={"help": "What kind of entity answers the question."})
    question: str = field(metadata={"help": "Question template; [X] is the subject label."})
    statement: str = field(
        metadata={"help": "Sentence asserting the edge for CoT steps; [X] subject, [Y] object."}
    )
    inverse: str | None = field(default=None, metadata={"help": "Property id of the inverse."})
    symmetric: bool = field(default=False, metadata={"help": "Whether (s, r, o) implies (o, r, s)."})
    sources: tuple[str, ...] = field(
        default=(), metadata={"help": "Bundled datasets that use this relation."}
    )

    def ask(self, subject: str) -> str:
        """The closed-book question about ``subject``."""
        return self.question.replace("[X]", subject)

    def state(self, subject: str, obj: str) -> str:
        """The sentence asserting ``(subject, self, obj)``."""
        return self.statement.replace("[X]", subject).replace("[Y]", obj)


@dataclass(frozen=True)
class TwoHop:
    """A two-hop question: follow ``path`` (two property ids) from the subject to the answer."""

    path: tuple[str, str] = field(metadata={"help": "The two property ids, in order."})
    question: str = field(metadata={"help": "Question template; [X] is the subject label."})

    @property
    def name(self) -> str:
        """Registry key, e.g. ``'P17/P36'``."""
        return "/".join(self.path)

    def ask(self, subject: str) -> str:
        """The two-hop question about ``subject``."""
        return self.question.replace("[X]", subject)


@dataclass(frozen=True)
class RelationSplit:
    """Which relations are in distribution (fine-tuned on) and which are test-only."""

    in_distribution: tuple[str, ...] = field(metadata={"help": "Relations used for fine-tuning."})
    out_of_distribution: tuple[str, ...] = field(metadata={"help": "Test-only relations."})


RELATIONS: Registry[Relation] = Registry("relation")
TWO_HOPS: Registry[TwoHop] = Registry("two-hop path")
SPLITS: Registry[RelationSplit] = Registry("relation split")


def _load() -> None:
    data = tomllib.loads(resources.files("kgfact").joinpath("relations.toml").read_text("utf-8"))
    for row in data["relation"]:
        rel = Relation(**{**row, "sources": tuple(row.get("sources", ()))})
        RELATIONS.register(rel.pid, rel)
    for row in data["two_hop"]:
        hop = TwoHop(path=tuple(row["path"]), question=row["question"])
        TWO_HOPS.register(hop.name, hop)
    for name, row in data["splits"].items():
        SPLITS.register(
            name,
            RelationSplit(tuple(row["in_distribution"]), tuple(row["out_of_distribution"])),
        )


_load()


def check_pid(pid: str) -> str:
    """Return ``pid`` if it is shaped like a Wikidata property id, else raise."""
    if not isinstance(pid, str) or not PID_RE.fullmatch(pid):
        raise KgfactError(f"{pid!r} is not a Wikidata property id (expected P followed by digits)")
    return pid


def get_relations(pids: list[str] | tuple[str, ...]) -> list[Relation]:
    """Look up several relations at once, reporting every unknown id in one error."""
    unknown = [p for p in pids if p not in RELATIONS]
    if unknown:
        for p in unknown:
            check_pid(p)
        raise KgfactError(
            f"unknown relation(s) {', '.join(unknown)}; known: {', '.join(RELATIONS.names())}"
        )
    return [RELATIONS.get(p) for p in pids]
