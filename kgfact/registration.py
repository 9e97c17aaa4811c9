"""Claims registered before the run: what the findings test as confirmatory, fixed in the config.

A registration names the primary claim, the secondary ones, the ``A(P)`` variant and its bins
the theory's claims are read with, the confidence level and the equivalence margin of claims
of no difference. It is part of the evaluation's configuration (``[evaluate.registration]``),
so it is recorded, with its SHA-256 digest, in the run's manifest when evaluation starts, before
any answer is seen. The findings then say of every claim whether it ran as registered
(``primary`` / ``secondary``) or is ``exploratory``: not registered, or registered with an
``A(P)`` variant or bins other than those the theory stage used. A registration changed after
evaluation ran is refused by ``kgfact run`` unless the run is evaluated again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from kgfact.config import check_fields
from kgfact.errors import KgfactError

ROLES = ("primary", "secondary", "exploratory")


@dataclass(frozen=True)
class Registration:
    """The confirmatory claims of a run and the choices they are tested with."""

    primary: str | None = field(default=None, metadata={
        "help": "The primary claim (a findings claim name); None: nothing is confirmatory."})
    secondary: tuple[str, ...] = field(default=(), metadata={
        "help": "Secondary claims (findings claim names), each with its own verdict."})
    augmentation: str | None = field(default=None, metadata={
        "help": "The A(P) variant the theory's claims are registered with (theory.augmentation "
                "must match)."})
    quantiles: int | None = field(default=None, metadata={"min": 1,
        "help": "A(P) bins of the exploratory bucket analysis (theory.prediction.quantiles)."})
    level: float = field(default=0.95, metadata={"above": 0, "below": 1,
        "help": "Confidence level of every interval of the findings."})
    margin: float = field(default=0.05, metadata={"above": 0,
        "help": "Equivalence margin of claims of no difference (two one-sided tests)."})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.primary is not None and self.primary in self.secondary:
            raise KgfactError(f"claim {self.primary!r} is registered both as primary and as "
                              "secondary")
        if len(set(self.secondary)) != len(self.secondary):
            raise KgfactError("a secondary claim is registered twice")

    @property
    def empty(self) -> bool:
        """Whether no claim is registered."""
        return self.primary is None and not self.secondary

    def digest(self) -> str:
        """SHA-256 of the registration's canonical JSON (what the manifest records)."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def role(self, claim: str) -> str:
        """``primary``, ``secondary`` or ``exploratory``."""
        if claim == self.primary:
            return "primary"
        return "secondary" if claim in self.secondary else "exploratory"

    def check_claims(self, known: list[str]) -> None:
        """One line naming every registered claim not in ``known``."""
        unknown = [c for c in (self.primary, *self.secondary) if c is not None and c not in known]
        if unknown:
            raise KgfactError(f"registered claim(s) {', '.join(map(repr, unknown))} do not "
                              f"exist; the claims are {', '.join(known)}")

    def theory_matches(self, augmentation: str | None, quantiles: int | None) -> list[str]:
        """How the theory stage's ``A(P)`` variant and bins differ from the registered ones
        (empty when they match or none is registered)."""
        out = []
        if self.augmentation is not None and augmentation != self.augmentation:
            out.append(f"A(P) {augmentation!r} where {self.augmentation!r} was registered")
        if self.quantiles is not None and quantiles != self.quantiles:
            out.append(f"{quantiles} A(P) bins where {self.quantiles} were registered")
        return out

    def changes(self, other: Registration) -> list[str]:
        """``"key old -> new"`` for every setting ``other`` changes."""
        old, new = asdict(self), asdict(other)
        return [f"{k} {old[k]!r} -> {new[k]!r}" for k in old if old[k] != new[k]]

    @classmethod
    def from_json(cls, data: dict | None) -> Registration:
        """A registration recorded in a manifest (an empty one where none was)."""
        data = dict(data or {})
        data["secondary"] = tuple(data.get("secondary") or ())
        return cls(**data)


def check_unchanged(recorded: dict, config: dict, run: str) -> None:
    """Refuse a registration changed after evaluation ran, unless the evaluation is redone.

    ``recorded`` and ``config`` are the evaluation's recorded and new configs (JSON, the
    ``evaluate`` section): when they differ only in their registration, the evaluation would
    not run again, so its findings would be read under claims registered after its answers
    were seen.
    """
    before, after = (Registration.from_json(c.get("registration")) for c in (recorded, config))
    rest = [{k: v for k, v in c.items() if k != "registration"} for c in (recorded, config)]
    if before != after and rest[0] == rest[1]:
        raise KgfactError(
            f"{run}: the registration changed after evaluation ran ("
            f"{'; '.join(before.changes(after))}); restore it, or evaluate again under the new "
            f"one ('kgfact evaluate {run}' with its --registration-* flags), which makes every "
            "finding exploratory that the first evaluation could have informed")
