"""The run's contract (:mod:`kgfact.contract`): the names, paths and rules every stage reads a
run by."""

from __future__ import annotations

import pytest

from kgfact.contract import (CHECKPOINTS, adapter_dir, memorised, mixture_name, protocol_of,
                             read_set, seed_home, trained_sets)
from kgfact.errors import KgfactError
from kgfact.rundir import RunDir
from tests import ftworld


def test_read_set_reads_a_set_or_names_the_sets_there_are(tmp_path):
    run = ftworld.make_run(tmp_path / "run")
    with pytest.raises(KgfactError) as err:
        read_set(run, "ft-known")
    assert str(err.value) == (f"{run.path} has no fine-tuning set 'ft-known': run "
                              "'kgfact ftsets' first")
    ft = ftworld.make_ft_run(tmp_path / "ft")
    assert read_set(ft, "ft-known").equals(ft.read_table("ftsets/ft-known"))
    with pytest.raises(KgfactError) as err:
        read_set(ft, "mix-50")
    assert str(err.value) == (f"{ft.path} has no fine-tuning set 'mix-50' (it has "
                              + ", ".join(ft.read_table("ftsets")["set"]) + ")")
    with pytest.raises(KgfactError, match="fine-tuning set"):
        read_set(ft, "../qa")  # a name that would reach out of ftsets/


def test_mixture_names():
    assert [mixture_name(x) for x in (0.0, 0.25, 0.5, 1 / 3, 1.0)] == [
        "ft-known", "mix-25", "mix-50", "mix-33", "ft-unknown"]


def test_adapters_live_per_set_seed_and_checkpoint_and_finish_at_convergence(tmp_path):
    run = RunDir(tmp_path / "run")
    assert trained_sets(run) == []  # no adapters/ folder yet
    assert seed_home(run, "mix-50", 2) == tmp_path / "run" / "adapters" / "mix-50" / "seed-2"
    assert [adapter_dir(run, "mix-50", c) for c in CHECKPOINTS] == [
        tmp_path / "run" / "adapters" / "mix-50" / "seed-0" / "early_stop",
        tmp_path / "run" / "adapters" / "mix-50" / "seed-0" / "convergence"]
    for name, seed, checkpoint in (("ft-known", 0, "convergence"), ("ft-known", 10, "convergence"),
                                   ("mix-50", 1, "early_stop")):  # mix-50 is still training
        adapter_dir(run, name, checkpoint, seed).mkdir(parents=True)
    assert trained_sets(run) == [("ft-known", 0), ("ft-known", 10)]
    with pytest.raises(KgfactError, match="fine-tuning set"):
        seed_home(run, "../x", 0)


def test_the_protocol_a_run_was_labelled_under(tmp_path):
    run = RunDir(tmp_path / "run")
    assert protocol_of(run) == "full"  # not labelled yet
    for config, protocol in (({"slick": {"n_prompts": 10}}, "full"),  # recorded before lazy
                             ({"slick": {"protocol": "lazy"}}, "lazy"), (None, "full")):
        with run.stage("slick", config):
            pass
        assert protocol_of(run) == protocol


def test_memorised_answers_are_training_answers_after_normalisation():
    assert memorised(["Paris", "the Lima", "Quito", "", None], ["Lima", "Paris"]).tolist() == [
        True, True, False, False, False]
