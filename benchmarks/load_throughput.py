"""Load throughput: Oxigraph's bulk loaders and kgfact's graph build versus rdflib.

Writes N synthetic Wikidata-shaped triples to an N-Triples file (entity-valued ``wdt:`` triples
over ~20 common properties, plus an English ``rdfs:label`` for ~10% of the entities, some with
quotes, backslashes and non-ASCII text), then times, in one run:

1. ``oxigraph load --location DIR --file F`` (the store's bulk loader, wall clock incl. startup),
2. ``pyoxigraph.Store(DIR).bulk_load(path=F, format=RdfFormat.N_TRIPLES)``,
3. ``rdflib.Graph().parse(F, format="nt")`` -- the baseline,
4. parsing the entity-valued triples into a (subject, relation, object) DataFrame with pyarrow,
5. ``kgfact.graph.KnowledgeGraph.from_tables(triples)`` on that DataFrame.

Generating the file is timed but not part of any comparison. The loaders' triple counts are
checked against the generated file after each timed step. The target is that the bulk loader
is at least 10x faster than rdflib; the script exits with status 1 if it is not.

Run from the repository root::

    bash .ci/with-venv python benchmarks/load_throughput.py                    # 1,000,000 triples
    bash .ci/with-venv python benchmarks/load_throughput.py --triples 100000   # quick run
    bash .ci/with-venv python benchmarks/load_throughput.py --keep-dir /tmp/kgbench  # keep files

A 1M-triple run takes about 1.5 minutes and 1.5 GB of RAM on 2 cores, most of it rdflib's.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyoxigraph
import rdflib

from kgfact.graph import KnowledgeGraph
from kgfact.wikidata import RDFS_LABEL, WD, WDT

TARGET_SPEEDUP = 10.0

# Common Wikidata properties with entity values, weighted roughly by how often they occur.
PROPERTIES = {
    "P31": 30, "P17": 12, "P131": 10, "P106": 8, "P27": 6, "P21": 6, "P19": 4, "P20": 3,
    "P361": 3, "P279": 3, "P50": 2, "P136": 2, "P495": 2, "P69": 2, "P108": 2, "P161": 2,
    "P150": 1, "P47": 1, "P30": 1, "P36": 1,
}
# Label vocabulary: plain, accented, non-Latin, astral-plane, and characters N-Triples escapes.
LABEL_WORDS = [
    "River", "Saint", "New", "Mount", "Lake", "House", "of", "the", "Zürich", "São Paulo", "Kraków",
    "Łódź", "Reykjavík", "Ελλάδα", "Москва", "東京都", "القاهرة", "मुंबई", "🎵 Song", 'The "Great"',
    "back\\slash", "O'Brien", "tab\tbetween", "line\nbreak",
]
_NT_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})

T = TypeVar("T")


@dataclass(frozen=True)
class Dataset:
    path: Path
    triples: int         # distinct triples in the file (= lines)
    entity_triples: int  # of which have an entity as object
    seconds: float       # time taken to generate and write it


@dataclass(frozen=True)
class Timing:
    method: str
    triples: int         # triples this step processed
    seconds: float
    detail: str = ""


# -- data ---------------------------------------------------------------------------------------

def generate(path: Path, n: int, seed: int) -> Dataset:
    """Write ``n`` distinct Wikidata-shaped triples to ``path`` as N-Triples, grouped by subject."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_entities = max(10, n // 4)
    n_labels = min(n_entities // 10, n // 2)
    n_edges = n - n_labels

    # Distinct, realistically sized Q-ids; objects are skewed towards popular entities.
    qids = np.sort(rng.integers(1, 130_000_000, size=n_entities * 11 // 10))
    qids = qids[np.concatenate([[True], qids[1:] != qids[:-1]])]
    qids = rng.permutation(qids)[:n_entities]
    entities = [f"<{WD}Q{q}>" for q in qids.tolist()]
    pids = list(PROPERTIES)
    predicates = [f"<{WDT}{p}>" for p in pids]
    weights = np.array(list(PROPERTIES.values()), dtype=float)

    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n_edges:  # top up in the (rare) case random triples collide
        k = n_edges - len(keys) + 16
        s = rng.integers(0, n_entities, size=k)
        p = rng.choice(len(pids), size=k, p=weights / weights.sum())
        o = (n_entities * rng.random(k) ** 3).astype(np.int64)
        keys = np.sort(np.concatenate([keys, (s * len(pids) + p) * n_entities + o]))
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    keys = np.sort(rng.permutation(keys)[:n_edges])
    s, rest = np.divmod(keys, len(pids) * n_entities)
    p, o = np.divmod(rest, n_entities)

    edge_lines = [f"{entities[a]} {predicates[b]} {entities[c]} .\n".encode()
                  for a, b, c in zip(s.tolist(), p.tolist(), o.tolist())]
    labelled = rng.choice(n_entities, size=n_labels, replace=False)
    words = rng.integers(0, len(LABEL_WORDS), size=(n_labels, 2)).tolist()
    escaped = [w.translate(_NT_ESCAPES) for w in LABEL_WORDS]
    label_lines = [f'{entities[e]} <{RDFS_LABEL}> "{escaped[w1]} {escaped[w2]} {i}"@en .\n'.encode()
                   for i, (e, (w1, w2)) in enumerate(zip(labelled.tolist(), words))]

    order = np.argsort(np.concatenate([s, labelled]), kind="stable")
    lines = edge_lines + label_lines
    path.write_bytes(b"".join([lines[i] for i in order.tolist()]))
    return Dataset(path, n_edges + n_labels, n_edges, time.perf_counter() - t0)


def parse_entity_triples(path: Path) -> pd.DataFrame:
    """(subject, relation, object) ids of the ``wd: wdt: wd:`` triples of an N-Triples file.

    Reads the file as space-separated columns with pyarrow; lines whose literal contains spaces
    have too many columns and are skipped, the remaining literal and non-``wdt:`` lines are
    filtered out. Expects one space between terms, as :func:`generate` writes.
    """
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=["s", "p", "o", "dot"]),
        parse_options=pacsv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False,
                                         invalid_row_handler=lambda row: "skip"),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(["s", "p", "o", "dot"], pa.string())),
    )
    entity, prop = f"<{WD}Q", f"<{WDT}P"
    keep = pc.and_(pc.and_(pc.starts_with(table["s"], entity), pc.starts_with(table["p"], prop)),
                   pc.starts_with(table["o"], entity))
    table = table.filter(keep)

    def strip(column: str, prefix: str) -> pa.ChunkedArray:  # "<prefix" + id + ">"  ->  id
        return pc.utf8_slice_codeunits(table[column], start=len(prefix) - 1, stop=-1)

    return pd.DataFrame({"subject": strip("s", entity).to_pandas(),
                         "relation": strip("p", prop).to_pandas(),
                         "object": strip("o", entity).to_pandas()})


# -- timed steps --------------------------------------------------------------------------------

def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def check_count(method: str, got: int, want: int) -> None:
    if got != want:
        raise SystemExit(f"{method} loaded {got} triples, expected {want}")


def store_size(location: Path) -> int:
    return len(pyoxigraph.Store.read_only(str(location)))


def oxigraph_cli(data: Dataset, workdir: Path) -> Timing:
    binary = Path(sys.executable).parent / "oxigraph"
    location = workdir / "oxigraph-cli"
    cmd = [str(binary), "load", "--location", str(location), "--file", str(data.path)]
    seconds, _ = timed(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
    check_count("oxigraph load", store_size(location), data.triples)
    return Timing("oxigraph load (CLI bulk loader)", data.triples, seconds,
                  "wall clock, incl. process start")


def pyoxigraph_bulk_load(data: Dataset, workdir: Path) -> Timing:
    location = workdir / "pyoxigraph"

    def load() -> None:
        store = pyoxigraph.Store(str(location))
        store.bulk_load(path=str(data.path), format=pyoxigraph.RdfFormat.N_TRIPLES)
        store.flush()
        del store  # closes the database

    seconds, _ = timed(load)
    check_count("pyoxigraph bulk_load", store_size(location), data.triples)
    return Timing("pyoxigraph Store.bulk_load", data.triples, seconds, "on-disk store")


def rdflib_parse(data: Dataset) -> Timing:
    seconds, graph = timed(lambda: rdflib.Graph().parse(str(data.path), format="nt"))
    check_count("rdflib", len(graph), data.triples)
    del graph
    return Timing("rdflib Graph.parse (baseline)", data.triples, seconds, "in-memory graph")


def knowledge_graph(data: Dataset) -> list[Timing]:
    parse_s, triples = timed(lambda: parse_entity_triples(data.path))
    check_count("parse_entity_triples", len(triples), data.entity_triples)
    build_s, graph = timed(lambda: KnowledgeGraph.from_tables(triples))
    check_count("KnowledgeGraph.from_tables", len(graph), data.entity_triples)  # len = edges
    n = data.entity_triples
    return [
        Timing("parse N-Triples -> DataFrame (pyarrow)", n, parse_s, "entity-valued triples only"),
        Timing("KnowledgeGraph.from_tables", n, build_s, "networkx graph from the DataFrame"),
        Timing("parse + KnowledgeGraph", n, parse_s + build_s),
    ]


# -- report -------------------------------------------------------------------------------------

def report(data: Dataset, timings: list[Timing], baseline: Timing, bulk: Timing) -> bool:
    print(f"\n{data.triples:,} triples ({data.entity_triples:,} entity-valued, "
          f"{data.triples - data.entity_triples:,} labels) in {data.path.name}, "
          f"{data.path.stat().st_size / 1e6:.1f} MB; "
          f"generated in {data.seconds:.1f} s (not compared)\n")
    base_rate = baseline.triples / baseline.seconds
    header = f"{'method':<42}{'triples':>11}{'seconds':>10}{'triples/s':>13}{'vs rdflib':>11}  note"
    print(header)
    print("-" * len(header))
    for t in timings:
        rate = t.triples / t.seconds
        print(f"{t.method:<42}{t.triples:>11,}{t.seconds:>10.2f}{rate:>13,.0f}"
              f"{rate / base_rate:>10.1f}x  {t.detail}")
    speedup = (bulk.triples / bulk.seconds) / base_rate
    ok = speedup >= TARGET_SPEEDUP
    print(f"\ntarget: bulk loader (oxigraph load) >= {TARGET_SPEEDUP:.0f}x rdflib triples/s -> "
          f"{speedup:.1f}x: {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triples", type=int, default=1_000_000, metavar="N",
                        help="number of triples to generate (default: 1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default: 0)")
    parser.add_argument("--keep-dir", type=Path, metavar="DIR",
                        help="write the N-Triples file and stores under DIR and keep them "
                             "(default: a temporary directory, deleted at exit)")
    args = parser.parse_args(argv)
    if args.triples < 100:
        parser.error("--triples must be at least 100")

    if args.keep_dir:
        args.keep_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="load-throughput-", dir=args.keep_dir))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="kgfact-load-throughput-"))
    try:
        print(f"working directory: {workdir}")
        print(f"python {sys.version.split()[0]}, pyoxigraph {pyoxigraph.__version__}, "
              f"rdflib {rdflib.__version__}, networkx {nx.__version__}, pandas {pd.__version__}, "
              f"pyarrow {pa.__version__}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f} at start")
        data = generate(workdir / f"wikidata-{args.triples}.nt", args.triples, args.seed)
        bulk = oxigraph_cli(data, workdir)
        in_process = pyoxigraph_bulk_load(data, workdir)
        baseline = rdflib_parse(data)
        timings = [bulk, in_process, baseline, *knowledge_graph(data)]
        ok = report(data, timings, baseline=baseline, bulk=bulk)
    finally:
        if not args.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
