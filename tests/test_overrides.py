"""``kgfact run --set section.key=value`` and the embedded store as configuration (``[store]``,
``--store-location``/``--store-port`` of ``kgfact build`` and ``kgfact run``), on real servers."""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgfact.cli import main, parser
from kgfact.data.store import OxigraphStore, StoreConfig
from kgfact.errors import KgfactError
from kgfact.pipeline import ExperimentConfig, apply_overrides, load_config, parse_override
from kgfact.rundir import RunDir

MINIMAL = '[build.qa]\nin_distribution = ["P36"]\n[slick]\nn_prompts = 3\n'
# the mini world's relations (tests/miniworld.py), as the notebooks' partial run builds them
RELATIONS = ["--relations", "P17,P36,P1376", "--ood", "P30"]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("overrides") / "c.toml"
    path.write_text(MINIMAL)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("text, key, value", [
    ("slick.sampling.n_samples=2", "slick.sampling.n_samples", 2),
    ('build.qa.in_distribution=["P36","P17"]', "build.qa.in_distribution", ["P36", "P17"]),
    ("build.qa.leakage_filter=true", "build.qa.leakage_filter", True),
    ("finetune.learning_rate=1e-3", "finetune.learning_rate", 0.001),
    ('description="a b"', "description", "a b"),
    ("backend.name=ray", "backend.name", "ray"),  # a bare word: a string
    ("build.entityquestions=/data/eq", "build.entityquestions", "/data/eq"),
    ("model.name=google/gemma-3-270m", "model.name", "google/gemma-3-270m"),
    (" threads = 1 ", "threads", 1),
    ("description=", "description", ""),
    ("description=a=b", "description", "a=b"),  # split at the first =
    ("description=1\n[x]", "description", "1\n[x]"),  # more than one TOML value: a string
])
def test_a_value_is_read_as_toml_or_else_as_a_string(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_are_set_before_the_check_and_later_ones_win(config_file):
    config = load_config(config_file, ["slick.n_prompts=5", "slick.sampling.n_samples=2",
                                       "build.qa.in_distribution=[\"P17\", \"P36\"]",
                                       "backend.name=ray", "slick.n_prompts=7",
                                       "store.location=somewhere", "store.port=7999"])
    assert config.slick.n_prompts == 7 and config.slick.sampling.n_samples == 2
    assert config.build.qa.in_distribution == ("P17", "P36") and config.backend.name == "ray"
    assert config.store == StoreConfig(location=Path("somewhere"), port=7999)
    # a mapping, as Python gives it (a tuple for an array); the file is not changed
    config = load_config(config_file, {"finetune.lora.r": 4, "ftsets.unknown_shares": (0, 1)})
    assert config.finetune.lora.r == 4 and config.ftsets.unknown_shares == (0.0, 1.0)
    assert load_config(config_file) == load_config(config_file, ())
    assert load_config(config_file, "slick.n_prompts=4").slick.n_prompts == 4  # one text
    with pytest.raises(KgfactError, match="^cannot set 3: a config key is a dotted path"):
        load_config(config_file, {3: 1})
    data = {"slick": {"n_prompts": 3}}
    assert apply_overrides(data, {"slick.n_prompts": 4}) == {"slick": {"n_prompts": 4}}
    assert data == {"slick": {"n_prompts": 3}}


def test_an_override_fixes_what_the_file_gets_wrong(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[build]\nentityquestions = 3\n')
    assert load_config(path, ["build.entityquestions=/data/eq"]).build.entityquestions == \
        "/data/eq"


@pytest.mark.parametrize("overrides, message", [
    (["slick.n_promts=3"], "{path}: unknown key slick.n_promts (did you mean 'n_prompts'?); "
                           "valid keys: n_prompts, shots, exemplar_split, "),
    (["slick.n_prompts=x"], "{path}: slick.n_prompts must be an integer, got string 'x'"),
    (["slick.n_prompts=0"], "{path}: [slick]: n_prompts must be >= 1, got 0"),
    (["store.port=65536"], "{path}: [store]: port must be <= 65535, got 65536"),
    (["store.location=3"], "{path}: store.location must be a path (a string), got integer 3"),
    (["build=3"], "{path}: build must be a table, got integer 3"),
    (["sick.x=1"], "{path}: unknown key sick (did you mean 'slick'?)"),
    (["slick"], "--set 'slick' is not KEY=VALUE (such as --set slick.sampling.n_samples=2)"),
    (["=3"], "cannot set '': a config key is a dotted path of names (letters, digits, _ and -), "
             "such as slick.sampling.n_samples"),
    (["slick..n_prompts=3"], "cannot set 'slick..n_prompts': a config key is a dotted path"),
    (["sl\nick=3"], "cannot set 'sl\\nick': a config key is a dotted path"),
    (["slick.n_prompts.x=3"], "cannot set slick.n_prompts.x: slick.n_prompts is integer 3, "
                              "not a table"),
])
def test_a_bad_override_is_one_line_and_nothing_runs(config_file, tmp_path, capsys, overrides,
                                                     message):
    expected = message.format(path=config_file)
    with pytest.raises(KgfactError) as err:
        load_config(config_file, overrides)
    assert str(err.value).startswith(expected)
    argv = [a for o in overrides for a in ("--set", o)]
    assert main(["run", str(config_file), "--run", str(tmp_path / "r"), *argv]) == 2
    out = capsys.readouterr().err
    assert out.startswith(f"kgfact: error: {expected}") and out.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_quoted_toml_key_holding_a_newline_is_one_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL + '"a\\nb" = 1\n')
    with pytest.raises(KgfactError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: unknown key slick.'a\\nb'; valid keys: n_prompts")


KEYS = ["slick.sampling.n_samples", "build.qa.in_distribution", "backend.name", "threads",
        "store.port", "store.location", "build.entityquestions", "slick", "finetune.lora.r",
        "description", "model", "build.qa", "x.y.z"]
VALUES = ["2", '"x"', '["P36", "P17"]', "true", "ray", "-1", "1e400", "nan", "{a = 1}", "[[[",
          '"', "2025-01-01", "", "0x10", "9" * 5000, "[" * 2000 + "]" * 2000, "1\n[x]",
          "3 # comment", "{n_samples = 2}"]
OVERRIDE = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS) | st.text(max_size=20),
              st.sampled_from(VALUES) | st.text(max_size=20)))


@settings(deadline=None, max_examples=300,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(OVERRIDE, max_size=3))
def test_any_override_gives_a_config_or_one_line(config_file, overrides):
    try:
        config = load_config(config_file, overrides)
    except KgfactError as exc:
        assert str(exc) and "\n" not in str(exc) and len(str(exc)) < 2000
    else:
        assert isinstance(config, ExperimentConfig)


# -- the store as configuration ----------------------------------------------------------------
@pytest.fixture
def mini_location(tmp_path, miniworld_nt) -> Path:
    """A store directory holding the mini world, not running; stopped after the test."""
    location = tmp_path / "elsewhere" / "store"
    OxigraphStore(StoreConfig(location=location)).load([miniworld_nt])
    yield location
    OxigraphStore(StoreConfig(location=location)).stop()


def test_build_starts_the_store_at_the_location_and_port_given(mini_location, mini_store,
                                                               tmp_path, capsys):
    port, run = _free_port(), tmp_path / "run"
    assert main(["build", "--run", str(run), "--store-location", str(mini_location),
                 "--store-port", str(port), *RELATIONS, "--quiet"]) == 0
    out = capsys.readouterr()
    url = f"http://127.0.0.1:{port}/query"
    assert out.err.splitlines()[-1] == f"kgfact: embedded store running at {url}"
    # the same questions as from the same data at another endpoint
    assert main(["build", "--run", str(tmp_path / "same"), "--endpoint", mini_store.query_url,
                 *RELATIONS, "--quiet"]) == 0
    capsys.readouterr()
    built = {name: RunDir(run).read_table(name) for name in ("triples", "entities", "qa")}
    assert (len(built["triples"]), len(built["entities"])) == (70, 64)  # as tests/test_build.py
    pd.testing.assert_frame_equal(built["qa"], RunDir(tmp_path / "same").read_table("qa"))
    assert out.out.startswith(f"built {run}: {len(built['qa'])} questions over 4 relations")
    store = OxigraphStore(StoreConfig(location=mini_location))
    assert RunDir(run).manifest()["stages"]["build"]["report"]["source"] == {
        "url": url, "data_version": store.data_version, "store": str(mini_location)}
    # it keeps running there until stopped: 'kgfact store stop --location'
    assert main(["store", "status", "--location", str(mini_location)]) == 0
    status = capsys.readouterr().out
    assert status.startswith(f"running: {url} (pid ")
    assert status.endswith(f"data in {mini_location})\n")
    assert main(["store", "stop", "--location", str(mini_location)]) == 0
    assert capsys.readouterr().out == "stopped\n" and store.status() is None


def test_run_takes_the_store_from_its_flags_over_set_and_the_file(mini_location, tmp_path,
                                                                  capsys, config_file):
    port, run = _free_port(), tmp_path / "run"
    config = tmp_path / "c.toml"
    config.write_text('[build.qa]\nin_distribution = ["P17", "P36", "P1376"]\n'
                      'out_of_distribution = ["P30"]\n[store]\nport = 1\n')
    # the model cannot load: the run stops after the build, which is all this test needs
    assert main(["run", str(config), "--run", str(run), "--quiet", "--set", "store.port=2",
                 "--store-port", str(port), "--set", f"store.location={mini_location}",
                 "--set", f"model.name={tmp_path / 'no-model'}"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"kgfact: error: cannot load model '{tmp_path / 'no-model'}'")
    source = RunDir(run).manifest()["stages"]["build"]["report"]["source"]
    assert source["url"] == f"http://127.0.0.1:{port}/query"
    assert source["store"] == str(mini_location)
    assert RunDir(run).manifest()["stages"]["run"]["config"]["store"] == {
        "location": str(mini_location), "host": "127.0.0.1", "port": port}


def test_a_taken_port_names_flags_that_exist(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["build", "--run", str(tmp_path / "run"), "--store-location",
                     str(tmp_path / "s"), "--store-port", str(port), "--quiet"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"kgfact: error: port {port} on 127.0.0.1 is in use; choose another with --port (kgfact "
        "store start) or --store-port (kgfact build, kgfact run; [store] port in a config)")
    for argv in (["store", "start", "--port", "1"], ["build", "--store-port", "1"],
                 ["run", "smoke", "--store-port", "1"]):
        parser().parse_args(argv)  # each flag the message names exists (else: exit 2)
