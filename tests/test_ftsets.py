"""Fine-tuning sets: exact composition, constant relation mix, nesting, relabelling."""

from __future__ import annotations

import pytest

from kgfact.cli import main
from kgfact.errors import KgfactError
from kgfact.ftsets import (FtSetsConfig, build_sets, fill_evenly, make_ftsets, spread,
                           train_pool)
from tests import ftworld


@pytest.fixture
def run(tmp_path):
    return ftworld.make_run(tmp_path / "run")


def test_spread_is_even_and_exact():
    assert spread(10, 3).tolist() == [4, 3, 3]
    assert spread(2, 4).tolist() == [1, 1, 0, 0]
    assert fill_evenly(10, [9, 9, 9]) == spread(10, 3).tolist()
    assert fill_evenly(10, [2, 9, 3]) == [2, 5, 3]


def test_mixtures_have_exactly_the_asked_unknown_share_and_a_constant_relation_mix(run):
    pool = train_pool(run)
    # P131 has 22 Known / 8 Unknown train questions, P17 32 / 17: at most 8 per relation
    sets = build_sets(pool, FtSetsConfig(size=10))
    want_unknown = {"ft-known": 0, "mix-25": 2, "mix-50": 5, "mix-75": 8, "ft-unknown": 10}
    for name, n_unknown in want_unknown.items():
        table = sets[name]
        assert len(table) == 10 and table["qid"].is_unique
        assert int((~table["known"]).sum()) == n_unknown
        assert table["relation"].value_counts().to_dict() == {"P131": 5, "P17": 5}
        assert (table["known"] == (table["category"] != "Unknown")).all()
        assert table["qid"].isin(pool["qid"]).all()
    unknown = {n: set(sets[n].loc[~sets[n]["known"], "qid"]) for n in want_unknown}
    assert unknown["mix-25"] <= unknown["mix-50"] <= unknown["mix-75"] <= unknown["ft-unknown"]
    # every example keeps its own SliCK category
    category = pool.set_index("qid")["category"]
    assert (sets["mix-50"]["category"] == sets["mix-50"]["qid"].map(category)).all()


def test_default_size_is_the_largest_the_grid_allows(run):
    sets = build_sets(train_pool(run), FtSetsConfig())
    assert len(sets["ft-unknown"]) == 16  # 8 Unknown P131 questions, twice
    # larger: P131 gives all 8 it can to every set, P17 the rest (the mix stays constant)
    sets = build_sets(train_pool(run), FtSetsConfig(size=21))
    for name in ("ft-known", "mix-50", "ft-unknown", "natural"):
        assert sets[name]["relation"].value_counts().to_dict() == {"P17": 13, "P131": 8}
    assert int((~sets["mix-50"]["known"]).sum()) == 10  # round(0.5 * 21), half-to-even
    with pytest.raises(KgfactError, match="largest possible is 25"):
        build_sets(train_pool(run), FtSetsConfig(size=26))


def test_category_natural_relabelled_and_filtered_sets(run):
    sets = build_sets(train_pool(run), FtSetsConfig(size=10))
    for name, category in (("highly-known", "HighlyKnown"), ("maybe-known", "MaybeKnown"),
                           ("weakly-known", "WeaklyKnown"), ("unknown", "Unknown")):
        assert set(sets[name]["category"]) == {category}
    # MaybeKnown: P131 has only 5, so 10 still fits (5 + 5)
    assert len(sets["maybe-known"]) == 10
    assert len(sets["natural"]) == 10
    idk, base = sets["idk-relabel"], sets["mix-50"]
    assert idk["qid"].tolist() == base["qid"].tolist()
    assert (idk.loc[idk["relabelled"], "answer"] == "I don't know").all()
    assert idk["relabelled"].sum() == 5 and (idk["relabelled"] == ~idk["known"]).all()
    assert (idk.loc[~idk["relabelled"], "answer"] == idk.loc[~idk["relabelled"], "gold"]).all()
    assert sets["filtered"]["qid"].tolist() == base.loc[base["known"], "qid"].tolist()


def test_sets_are_saved_and_indexed(run, capsys):
    assert main(["ftsets", str(run.path), "--size", "8", "--shares", "0,0.5,1"]) == 0
    index = run.read_table("ftsets").set_index("set")
    assert index.loc["mix-50", "n_unknown"] == 4 and index.loc["ft-known", "size"] == 8
    assert "mix-25" not in index.index
    assert run.read_table("ftsets/ft-unknown")["known"].sum() == 0
    assert "ft-unknown" in capsys.readouterr().out


def test_ftsets_errors(run, tmp_path, capsys):
    assert main(["ftsets", str(run.path), "--relations", "P36"]) == 2
    assert "no SliCK-labelled train questions for P36" in capsys.readouterr().err
    empty = ftworld.make_run(tmp_path / "empty")
    slick = empty.read_table("slick")
    empty.write_table("slick", slick.assign(category="HighlyKnown"))
    with pytest.raises(KgfactError, match="no relation has both Known and Unknown"):
        make_ftsets(empty)


def test_guesses_are_kept_or_excluded(run):
    slick = run.read_table("slick")
    with pytest.raises(KgfactError, match="no guess flags"):
        train_pool(run, guesses="exclude")
    guessed = set(slick.loc[slick["split"] == "train", "qid"][:5])
    run.write_table("slick", slick.assign(guess=slick["qid"].isin(guessed)))
    kept, excluded = train_pool(run), train_pool(run, guesses="exclude")
    assert set(kept["qid"]) - set(excluded["qid"]) == guessed
    make_ftsets(run, FtSetsConfig(size=4, guesses="exclude"))
    for name in run.read_table("ftsets")["set"]:
        assert not run.read_table(f"ftsets/{name}")["qid"].isin(guessed).any()
    with pytest.raises(KgfactError, match="guesses must be one of"):
        FtSetsConfig(guesses="drop")


def test_shares_naming_one_set_are_refused_by_the_two_shares_not_the_whole_list():
    with pytest.raises(KgfactError) as err:
        FtSetsConfig(unknown_shares=(0.0, 0.5, *(0.6 + i / 10**6 for i in range(100_000))))
    assert str(err.value) == ("unknown_shares 0.6 and 0.600001 both give the set mix-60: "
                              "shares must differ by at least 0.01")
