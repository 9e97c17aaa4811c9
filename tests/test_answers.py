"""Answer normalisation and matching: the documented definition of a correct answer."""

from __future__ import annotations

import numpy as np
import pytest

from kgfact.answers import exact_match, extract_answer, match_many, normalize
from kgfact.errors import KgfactError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "paris"),
        ("PARIS", "paris"),
        ("Straße", "strasse"),
        ("U.S.", "us"),
        ("O'Brien", "obrien"),
        ("“Quoted” title!", "quoted title"),
        ("Saint-Étienne", "saint etienne"),
        ("Rock–Paper (band)", "rock paper band"),
        ("$100 + tax", "100 tax"),
        ("The Hague", "hague"),
        ("A Tale of an Apple", "tale of apple"),
        ("Theodore", "theodore"),
        ("Anathema", "anathema"),
        ("  New \t York\n City  ", "new york city"),
        ("São Paulo", "sao paulo"),
        ("Zürich", "zurich"),
        ("İstanbul", "istanbul"),
        ("Ｐａｒｉｓ", "paris"),
        ("ﬁnland", "finland"),
        ("", ""),
        ("the", ""),
        (" ... ", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_normalize_rejects_non_strings() -> None:
    with pytest.raises(KgfactError, match="expected a string"):
        normalize(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prediction", "gold", "aliases", "expected"),
    [
        ("paris", "Paris", (), True),
        ("Paris.", "Paris", (), True),
        ("the Netherlands", "Netherlands", (), True),
        ("Theodore Roosevelt", "odore Roosevelt", (), False),
        ("Sao  Paulo", "São Paulo", (), True),
        ("ＵＳＡ", "United States", ["USA"], True),
        ("America", "United States", ["USA", "U.S."], False),
        ("us", "United States", ["USA", "U.S."], True),
        ("Lyon", "Paris", (), False),
        ("Paris, France", "Paris", (), False),
        ("", "", (), False),
        ("the", "The", (), False),
        ("", "Paris", [""], False),
    ],
)
def test_exact_match(prediction: str, gold: str, aliases: list[str], expected: bool) -> None:
    assert exact_match(prediction, gold, aliases) is expected


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ("Paris", "Paris"),
        ("Paris.", "Paris"),
        ("  Paris. \nQuestion: Where is Lyon?\nAnswer: France", "Paris"),
        ("\n\nParis\n", "Paris"),
        ("Washington, D.C.", "Washington, D.C"),
        ("Paris\r\nLyon", "Paris"),
        ("", ""),
        ("\n \n", ""),
    ],
)
def test_extract_answer(generation: str, expected: str) -> None:
    assert extract_answer(generation) == expected


def test_match_many_agrees_with_exact_match() -> None:
    predictions = ["paris", "Lyon", "usa", "", "The Hague", None, float("nan")]
    golds = ["Paris", "Paris", "United States", "", "Hague", "Paris", "Paris"]
    aliases = [[], None, np.array(["USA"]), [""], (), ["x"], []]
    out = match_many(predictions, golds, aliases)
    assert out.dtype == bool
    assert out.tolist() == [True, False, True, False, True, False, False]
    for pred, gold, alts, got in zip(predictions[:5], golds, aliases, out):
        assert exact_match(pred, gold, alts if alts is not None else ()) is bool(got)


def test_match_many_without_aliases_and_empty() -> None:
    assert match_many(["Paris", "Rome"], ["paris", "Milan"]).tolist() == [True, False]
    assert match_many([], []).shape == (0,)


def test_match_many_length_mismatch() -> None:
    with pytest.raises(KgfactError, match="2 predictions, 1 golds"):
        match_many(["a", "b"], ["a"])
    with pytest.raises(KgfactError, match="1 alias lists"):
        match_many(["a", "b"], ["a", "b"], [[]])
