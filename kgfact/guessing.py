"""Knownness vs guessing: a SliCK "Known" fact may only be the relation's default answer.

SliCK calls a fact Known when the model answers it correctly, but a correct answer is not always
knowledge of that fact. Two cheap routes to a right answer are flagged here:

- **default-answer**: the gold answer is the answer the model gives most often to the *other*
  questions of the relation under the SliCK prompts, and that answer is a real default
  (:func:`is_default`: at least :data:`DEFAULT_MIN_SHARE` of those answers and
  :data:`DEFAULT_MIN_RATIO` times as frequent as the runner-up). Gemma 3 270M answers
  EntityQuestions' P495 (country of origin) mostly with "United States of America", so every
  American work is "Known" whether or not the model knows anything about it. The question's
  own answers are left out: with them, a fact the model knows (ten greedy "Paris" for "capital
  of France") made its own answer the relation's top answer and flagged itself as a guess.
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
# a relation's top answer is the model's default when it is at least this share of the answers
# and this many times as frequent as the runner-up: an answer given to a quarter of the
# questions, clearly ahead of any other, is a habit of the model, not knowledge of each fact
DEFAULT_MIN_SHARE, DEFAULT_MIN_RATIO = 0.25, 2.0
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


def is_default(top: int, runner_up: int, total: int) -> bool:
    """Whether an answer given ``top`` times out of ``total``, the next one ``runner_up`` times,
    is a real default (:data:`DEFAULT_MIN_SHARE`, :data:`DEFAULT_MIN_RATIO`).

    >>> is_default(5, 2, 10), is_default(5, 3, 10), is_default(4, 1, 20)
    (True, False, False)
    """
    return total > 0 and top >= DEFAULT_MIN_SHARE * total and top >= DEFAULT_MIN_RATIO * runner_up


def _ranked(counts: Counter | dict[str, int]) -> list[str]:
    """Normalised answers, most frequent first; ties to the alphabetically first."""
    return sorted(counts, key=lambda k: (-counts[k], k))


def _answers(greedy: Iterable[str]) -> list[str]:
    """The greedy answers that are answers (not empty once normalised)."""
    return [a for a in greedy if normalize(a)]


def default_answers(slick: pd.DataFrame) -> pd.DataFrame:
    """The model's top answer per relation: its most frequent greedy SliCK answer.

    Parameters
    ----------
    slick : DataFrame
        The ``slick`` table (``relation`` and ``greedy_answers``, a list per question).

    Returns
    -------
    DataFrame
        One row per relation: ``default_answer`` (as the model wrote it most often among the
        answers that normalise alike), ``default_share`` (its share of all greedy answers of
        the relation), ``runner_up_share`` (the next answer's), ``real_default``
        (:func:`is_default`) and ``n_answers``. Ties go to the alphabetically first normalised
        form. The guess flags use each question's default without its own answers
        (:func:`flag_guesses`).
    """
    rows = []
    for relation, group in slick.groupby("relation", sort=True):
        answers = [a for row in group["greedy_answers"] for a in _answers(row)]
        counts = Counter(normalize(a) for a in answers)
        if not counts:
            rows.append((relation, None, 0.0, 0.0, False, 0))
            continue
        top, *rest = _ranked(counts)
        second = counts[rest[0]] if rest else 0
        rows.append((relation, _spellings(answers)[top], counts[top] / len(answers),
                     second / len(answers), is_default(counts[top], second, len(answers)),
                     len(answers)))
    return pd.DataFrame(rows, columns=["relation", "default_answer", "default_share",
                                       "runner_up_share", "real_default", "n_answers"])


def _spellings(answers: list[str]) -> dict[str, str]:
    """Per normalised answer, how the model wrote it most often (ties to the alphabetically
    first spelling)."""
    written = Counter((normalize(a), a.strip()) for a in answers)
    best: dict[str, str] = {}
    for (form, spelling), n in sorted(written.items(), key=lambda kv: (-kv[1], kv[0][1])):
        best.setdefault(form, spelling)
    return best


def own_defaults(slick: pd.DataFrame) -> pd.Series:
    """Per record of ``slick``: the real default answer (:func:`is_default`) of the other
    questions of its relation, as the model wrote it, or None where they have none.

    Leaving out one question's answers lowers only the counts of those answers, so the top two
    answers of the others are among that question's own answers and the relation's first
    ``len(own) + 2`` answers: each record costs a few look-ups, not a recount.
    """
    out = pd.Series([None] * len(slick), index=slick.index, dtype=object)
    for _, group in slick.groupby("relation", sort=True):
        own = [Counter(normalize(a) for a in _answers(row)) for row in group["greedy_answers"]]
        counts = Counter()
        for mine in own:
            counts.update(mine)
        if not counts:
            continue
        ranked, total = _ranked(counts), counts.total()
        spellings = _spellings([a for row in group["greedy_answers"] for a in _answers(row)])
        for at, mine in zip(group.index, own):
            left = {k: counts[k] - mine[k] for k in {*ranked[:len(mine) + 2], *mine}}
            top, *rest = _ranked(left)
            if is_default(left[top], left[rest[0]] if rest else 0, total - mine.total()):
                out[at] = spellings[top]
    return out


def flag_guesses(slick: pd.DataFrame, qa: pd.DataFrame) -> pd.DataFrame:
    """``slick`` with ``guess`` (bool) and ``guess_kind`` (a :data:`GUESS_KINDS` value or None).

    A record is a default-answer guess when its gold answer (or an alias) is the default of the
    other questions of its relation (:func:`own_defaults`). A record that is both is flagged
    ``default-answer`` (the stronger explanation: the model would give that answer to any
    question of the relation).
    """
    facts = qa.set_index("qid").loc[slick["qid"], ["answer", "aliases", "subject_label"]]
    default = match_many(own_defaults(slick).tolist(), facts["answer"].tolist(),
                         facts["aliases"].tolist())
    spelled = np.array([in_question(s, a, al) for s, a, al in zip(
        facts["subject_label"], facts["answer"], facts["aliases"])], dtype=bool)
    kind = np.where(default, GUESS_KINDS[0], np.where(spelled, GUESS_KINDS[1], None))
    return slick.assign(guess=default | spelled, guess_kind=kind)


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
