"""The embedded Oxigraph store: lifecycle, loading, status, errors."""

from __future__ import annotations

import socket

import pytest

from kgfact.data.store import OxigraphStore, StoreConfig
from kgfact.errors import KgfactError
from tests import miniworld


def test_start_status_stop_and_persistence(tmp_path, miniworld_nt):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    assert store.status() is None and store.is_empty()
    store.load([miniworld_nt])
    state = store.start(load_default=False)
    try:
        assert store.start() == state  # a second start is a no-op
        assert state["url"].startswith("http://127.0.0.1:")
        n = store.count_triples()
        triples, entities = miniworld.tables()
        labels = entities["label"].notna().sum()
        aliases = entities["aliases"].map(len).sum()
        population = entities["population"].notna().sum()
        assert n == len(triples) + labels + aliases + population
    finally:
        assert store.stop() is True
    assert store.status() is None and store.stop() is False
    with pytest.raises(KgfactError, match="not running"):
        store.query_url
    store.start(load_default=False)  # data persisted on disk
    try:
        assert store.count_triples() == n
    finally:
        store.stop()


def test_load_while_running_restarts_on_same_port(tmp_path, miniworld_nt):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    before = store.start(load_default=False)
    try:
        assert store.count_triples() == 0
        store.load([miniworld_nt])
        after = store.status()
        assert after["port"] == before["port"] and after["pid"] != before["pid"]
        assert store.count_triples() > 0
    finally:
        store.stop()


def test_stale_state_file_is_ignored(tmp_path):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    store.location.mkdir(parents=True)
    store.state_file.write_text('{"pid": 999999, "host": "127.0.0.1", "port": 1, "url": "x"}')
    assert store.status() is None and not store.state_file.exists()


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=port))
        with pytest.raises(KgfactError, match=f"port {port} .* is in use"):
            store.start(load_default=False)


def test_bad_files_are_clear_errors(tmp_path):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    with pytest.raises(KgfactError, match="does not exist"):
        store.load([tmp_path / "missing.nt"])
    odd = tmp_path / "data.csv"
    odd.write_text("a,b\n")
    with pytest.raises(KgfactError, match="unknown RDF format"):
        store.load([odd])
    broken = tmp_path / "broken.nt"
    broken.write_text("<http://x/a> <http://x/b> .\n")
    with pytest.raises(KgfactError, match="loading .*broken.nt failed"):
        store.load([broken])
