"""Knownness vs guessing: a SliCK "Known" fact may only be the relation's default answer.

SliCK calls a fact Known when the model answers it correctly, but a correct answer is not always
knowledge of that fact. Two cheap routes to a right answer are flagged here:

- **default-answer**: the gold answer is the answer the model gives most often for the whole
  relation under the SliCK prompts (its *default*). Gemma 3 270M answers EntityQuestions' P495
  (country of origin) mostly with "United States of America", so every American work is
  "Known" whether or not the model knows anything about it.
- **in-question**: the answer is spelled out in the question's subject: a word of the gold answer
  (or of an alias) is a word of the subject label, e.g. "What is the capital of Mexico?" ->
  "Mexico City", or a founder named in a company's name. Words shared by many unrelated names
  (:data:`GENERIC_WORDS`, such as "new", "saint", "city", "united") and words under three
  characters do not count.

Beside the flags, :func:`prior_baselines` gives two accuracies a model reaches without knowing
any fact of a relation: always answering the most frequent training answer, and always giving
the model's own default. A category's accuracy is only informative above them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from kgfact.answers import match_many, normalize

GUESS_KINDS = ("default-answer", "in-question")
GENERIC_WORDS = frozenset({
    "new", "old", "san", "santa", "saint", "st", "city", "town", "state", "states", "county",
    "province", "district", "region", "republic", "united", "kingdom", "north", "south", "east",
    "west", "northern", "southern", "eastern", "western", "upper", "lower", "great", "greater",
    "island", "islands", "lake", "river", "mount", "port", "fort", "and", "for", "von", "van",
    "del", "des", "los", "las", "company", "inc", "ltd", "records", "university", "college",
    "school", "football", "club", "fc",
})


def _words(text: str) -> set[str]:
    return {w for w in normalize(text).split() if len(w) >= 3 and w not in GENERIC_WORDS}


def in_question(subject: str, answer: str, aliases: Iterable[str] | None = ()) -> bool:
    """Whether the answer (or an alias) shares a significant word with the subject label.

    Examples
    --------
    >>> in_question("Mexico", "Mexico City")
    True
    >>> in_question("Ford Motor Company", "Henry Ford")
    True
    >>> in_question("United Kingdom", "United States of America", ["USA"])
    False
    """
    subject_words = _words(subject)
    return any(subject_words & _words(a) for a in [answer, *(aliases if aliases is not None
                                                            else ())])


def default_answers(slick: pd.DataFrame) -> pd.DataFrame:
    """The model's default answer per relation: its most frequent greedy SliCK answer.

    Parameters
    ----------
    slick : DataFrame
        The ``slick`` table (``relation`` and ``greedy_answers``, a list per question).

    Returns
    -------
    DataFrame
        One row per relation: ``default_answer`` (as the model wrote it most often among the
        answers that normalise alike), ``default_share`` (its share of all greedy answers of
        the relation) and ``n_answers``. Ties go to the alphabetically first normalised form.
    """
    rows = []
    for relation, group in slick.groupby("relation", sort=True):
        answers = [a for row in group["greedy_answers"] for a in row if normalize(a)]
        counts = Counter(normalize(a) for a in answers)
        if not counts:
            rows.append((relation, None, 0.0, 0))
            continue
        top = min(counts, key=lambda k: (-counts[k], k))
        spelling = Counter(a.strip() for a in answers if normalize(a) == top)
        written = min(spelling, key=lambda k: (-spelling[k], k))
        rows.append((relation, written, counts[top] / len(answers), len(answers)))
    return pd.DataFrame(rows, columns=["relation", "default_answer", "default_share",
                                       "n_answers"])


def flag_guesses(slick: pd.DataFrame, qa: pd.DataFrame) -> pd.DataFrame:
    """``slick`` with ``guess`` (bool) and ``guess_kind`` (a :data:`GUESS_KINDS` value or None).

    A record that is both is flagged ``default-answer`` (the stronger explanation: the model
    would give that answer to any question of the relation).
    """
    facts = qa.set_index("qid").loc[slick["qid"], ["answer", "aliases", "subject_label"]]
    defaults = default_answers(slick).set_index("relation")["default_answer"]
    default = slick["relation"].map(defaults)
    is_default = match_many(default.tolist(), facts["answer"].tolist(),
                            facts["aliases"].tolist())
    spelled = np.array([in_question(s, a, al) for s, a, al in zip(
        facts["subject_label"], facts["answer"], facts["aliases"])], dtype=bool)
    kind = np.where(is_default, GUESS_KINDS[0], np.where(spelled, GUESS_KINDS[1], None))
    return slick.assign(guess=is_default | spelled, guess_kind=kind)


def prior_baselines(qa: pd.DataFrame, slick: pd.DataFrame, split: str = "test"
                    ) -> pd.DataFrame:
    """Accuracy per relation of two answers that need no knowledge of the fact asked.

    Parameters
    ----------
    qa : DataFrame
        The ``qa`` table.
    slick : DataFrame
        The ``slick`` table (for the model's default answers).
    split : str
        Split whose questions the baselines are scored on.

    Returns
    -------
    DataFrame
        One row per relation with questions in ``split``: ``majority_answer`` (the most
        frequent train answer; ties to the alphabetically first), ``majority_accuracy``
        (accuracy of always giving it), ``default_answer``, ``default_share`` and
        ``default_accuracy`` (accuracy of always giving the model's default), and ``n``.
    """
    defaults = default_answers(slick).set_index("relation")
    rows = []
    for relation, group in qa[qa["split"] == split].groupby("relation", sort=True):
        train = qa[(qa["relation"] == relation) & (qa["split"] == "train")]["answer"]
        counts = Counter(train)
        majority = min(counts, key=lambda k: (-counts[k], k)) if counts else None
        default = defaults["default_answer"].get(relation)
        golds, aliases = group["answer"].tolist(), group["aliases"].tolist()

        def accuracy(answer: str | None) -> float:
            return float(match_many([answer] * len(golds), golds, aliases).mean())
        rows.append((relation, len(group), majority, accuracy(majority), default,
                     float(defaults["default_share"].get(relation, np.nan)), accuracy(default)))
    return pd.DataFrame(rows, columns=["relation", "n", "majority_answer", "majority_accuracy",
                                       "default_answer", "default_share", "default_accuracy"])


def guess_mix(flagged: pd.DataFrame) -> pd.DataFrame:
    """Per relation and SliCK category: facts, guesses, and guesses of each kind.

    ``flagged`` is the output of :func:`flag_guesses`; an ``"all"`` relation row sums them.
    """
    frame = pd.concat([flagged, flagged.assign(relation="all")], ignore_index=True)
    table = frame.groupby(["relation", "category"]).agg(n=("qid", "size"),
                                                        guesses=("guess", "sum"))
    for kind in GUESS_KINDS:
        table[kind] = (frame["guess_kind"] == kind).groupby(
            [frame["relation"], frame["category"]]).sum()
    return table.reset_index().astype({"guesses": int, **{k: int for k in GUESS_KINDS}})
