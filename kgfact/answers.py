"""Answer matching: the one definition of "the model got it right" used by every stage.

A prediction matches when its normalised form equals the normalised gold answer or the normalised
form of one of the gold answer's aliases. :func:`normalize` applies these steps, in order:

1. **Unicode compatibility decomposition (NFKD).** Fullwidth and other compatibility characters
   become their plain forms (``"Ｐａｒｉｓ"`` -> ``"Paris"``, ``"ﬁ"`` -> ``"fi"``) and accented
   letters split into a base letter plus combining marks.
2. **Casefold**, a stronger ``lower()`` (``"Straße"`` -> ``"strasse"``), then decompose again:
   casefolding does not preserve normalisation (Unicode's compatibility caseless match also
   decomposes after casefolding, for the same reason).
3. **Strip combining marks** (Unicode category ``M*``), so ``"São Paulo"`` equals ``"Sao Paulo"``.
4. **Remove punctuation and symbols.** Dashes (category ``Pd``) become spaces, so
   ``"Saint-Étienne"`` equals ``"Saint Etienne"``; every other punctuation character (``P*``:
   periods, commas, apostrophes, quotes, brackets, ...) and every symbol (``S*``: ``$``, ``+``,
   ``|``, the backtick, ...) is deleted, so ``"U.S."`` equals ``"US"`` and ``"O'Brien"`` equals
   ``"OBrien"``.
5. **Remove the English articles** ``a``, ``an`` and ``the`` where they are whole words
   (``"The Hague"`` -> ``"hague"``, but ``"Theodore"`` is kept).
6. **Collapse whitespace** (any Unicode whitespace) to single spaces and strip both ends.

A prediction that normalises to the empty string never matches, even an empty gold answer.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np

from kgfact.errors import KgfactError

__all__ = ["ARTICLES", "exact_match", "extract_answer", "match_many", "normalize"]

ARTICLES = frozenset({"a", "an", "the"})


@cache
def _replacement(char: str) -> str:
    # Per-character verdict of steps 3-4, cached because answers reuse a small alphabet.
    category = unicodedata.category(char)
    if category == "Pd":
        return " "
    if category[0] in "MPS":
        return ""
    return char


def normalize(text: str) -> str:
    """Normalise an answer string for matching (see the module docstring for each step).

    Parameters
    ----------
    text : str
        A gold answer, alias or model prediction.

    Returns
    -------
    str
        The normalised text; may be empty.

    Examples
    --------
    >>> normalize("  The  São-Paulo F.C.! ")
    'sao paulo fc'
    """
    if not isinstance(text, str):
        raise KgfactError(f"cannot normalise {type(text).__name__} {text!r}: expected a string")
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    stripped = "".join(_replacement(ch) for ch in decomposed)
    return " ".join(word for word in stripped.split() if word not in ARTICLES)


def exact_match(prediction: str, gold: str, aliases: Iterable[str] = ()) -> bool:
    """Whether ``prediction`` matches ``gold`` or one of ``aliases`` after :func:`normalize`.

    Parameters
    ----------
    prediction : str
        The model's answer (see :func:`extract_answer` for raw generations).
    gold : str
        The gold answer.
    aliases : iterable of str, optional
        Other accepted forms of the gold answer.

    Returns
    -------
    bool
        ``False`` whenever the prediction normalises to the empty string.

    Examples
    --------
    >>> exact_match("the united states", "United States", ["USA"])
    True
    """
    pred = normalize(prediction)
    if not pred:
        return False
    return pred == normalize(gold) or any(pred == normalize(alias) for alias in aliases)


def extract_answer(generation: str) -> str:
    """The short answer inside a raw generation: its first non-blank line, without a final period.

    Leading blank lines are skipped because models often start a completion with a newline.

    Examples
    --------
    >>> extract_answer("\\n Paris.\\nQuestion: What is ...")
    'Paris'
    """
    if not isinstance(generation, str):
        raise KgfactError(f"expected a generated string, got {type(generation).__name__}")
    lines = generation.strip().splitlines()
    first = lines[0].strip() if lines else ""
    return first.removesuffix(".").rstrip()


def match_many(
    predictions: Sequence[str | None],
    golds: Sequence[str],
    aliases: Sequence[Iterable[str] | None] | None = None,
) -> np.ndarray:
    """Vectorised :func:`exact_match` over the rows of a table.

    Normalised strings are cached across rows, since golds and aliases repeat (several samples
    per question) and so do predictions.

    Parameters
    ----------
    predictions : sequence of str or None
        One prediction per row; a missing prediction (``None`` or NaN) never matches.
    golds : sequence of str
        One gold answer per row.
    aliases : sequence of (iterable of str or None), optional
        Accepted aliases per row (lists, arrays or ``None``); omitted means no aliases.

    Returns
    -------
    numpy.ndarray
        Boolean array, ``True`` where the row's prediction matches.

    Raises
    ------
    KgfactError
        If the sequences have different lengths.
    """
    n = len(predictions)
    if len(golds) != n or (aliases is not None and len(aliases) != n):
        lengths = f"{n} predictions, {len(golds)} golds"
        if aliases is not None:
            lengths += f", {len(aliases)} alias lists"
        raise KgfactError(f"match_many needs one gold answer per prediction, got {lengths}")
    memo: dict[str, str] = {}

    def norm(text: str) -> str:
        if text not in memo:
            memo[text] = normalize(text)
        return memo[text]

    alias_rows = [()] * n if aliases is None else aliases
    out = np.zeros(n, dtype=bool)
    for i, (pred, gold, alts) in enumerate(zip(predictions, golds, alias_rows)):
        if not isinstance(pred, str):
            continue
        p = norm(pred)
        if p and (p == norm(gold) or (alts is not None and any(p == norm(a) for a in alts))):
            out[i] = True
    return out
