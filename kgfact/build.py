"""``kgfact build``: from a SPARQL endpoint (or EntityQuestions files) to a run directory.

Writes ``triples.parquet``, ``entities.parquet``, ``qa.parquet`` and ``qa_two_hop.parquet`` and
records the configuration and every filter count in the manifest's ``build`` stage. Work units are
checkpointed under ``<run>/checkpoints/build-<key>``, so a killed build resumes where it stopped.
The key digests everything that decides what the units hold (the configuration, and the source's
identity: the endpoint URL, or a kgfact store's data version), so a build resumed with another
source, other relations or a reloaded store starts afresh instead of mixing old units in. A store
kgfact started, at any location, is known by its data version whether the build uses it by
default or names its URL with ``--endpoint`` (under any loopback host name), so neither
checkpoints nor cached answers outlive a ``kgfact store load``. The build holds the run
directory's lock (:meth:`kgfact.rundir.RunDir.writing`) from its first check to its last write.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from kgfact.data.fetch import FetchConfig, GraphFetcher
from kgfact.data.sparql import USER_AGENT, EndpointConfig, SparqlClient
from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.qa import (QA_COLUMNS, QAConfig, build_qa, build_two_hop, drop_ambiguous,
                       drop_leakage, finish, sample_per_group)
from kgfact.rundir import RunDir, config_json

STAGE = "build"


@dataclass(frozen=True)
class BuildConfig:
    """Where the facts come from and how they become QA data."""

    qa: QAConfig = field(default_factory=QAConfig, metadata={
        "help": "Question building, filters and splits."})
    endpoint: str | None = field(default=None, metadata={
        "help": "SPARQL endpoint URL; None uses the embedded Oxigraph store (started if "
                "it is not running)."})
    entityquestions: str | None = field(default=None, metadata={
        "help": "Import an EntityQuestions folder (from its authors, Sciavolino et al. 2021) "
                "instead of querying an endpoint."})
    split: str | None = field(default=None, metadata={
        "help": "Named relation split (slick, geonames) giving the relations when qa names "
                "none; None = the source's: geonames for the embedded store, slick otherwise "
                "(for EntityQuestions, the split's relations present in the folder)."})
    page_size: int = field(default=10_000, metadata={"min": 1, "help": "Rows per SPARQL page."})
    max_triples_per_relation: int | None = field(default=None, metadata={"min": 1,
        "help": "Cap on fetched triples per relation (useful on Wikidata)."})
    expand_hops: int = field(default=1, metadata={"min": 0,
        "help": "Neighbourhood hops fetched from objects to complete multi-hop paths."})
    timeout: float = field(default=60.0, metadata={"above": 0, "max": 86_400,
        "help": "Seconds one SPARQL request may take, connection, headers and body together; "
                "at most a day."})
    query_deadline: float = field(default=600.0, metadata={"above": 0,
        "help": "Seconds one SPARQL query may take with all its retries and waits, so an "
                "endpoint that never answers fails after this."})
    fetch_deadline: float | None = field(default=None, metadata={"above": 0,
        "help": "Seconds all the build's SPARQL queries may take together; None: no limit "
                "(a Wikidata build can take hours)."})
    user_agent: str = field(default=USER_AGENT, metadata={"help": "SPARQL User-Agent."})

    def __post_init__(self) -> None:
        check_fields(self)
        if self.endpoint and self.entityquestions:
            raise KgfactError("give either an endpoint or an EntityQuestions folder, not both")


def source_name(config: BuildConfig) -> str:
    """``entityquestions``, ``endpoint`` or ``geonames`` (the embedded store's data)."""
    return ("entityquestions" if config.entityquestions else
            "endpoint" if config.endpoint else "geonames")


def resolved(config: BuildConfig) -> BuildConfig:
    """``config`` with its relations filled in from the source's relation split (the
    ``split`` field's docs) where ``qa`` names none."""
    from kgfact.relations import SPLITS

    qa = config.qa
    if qa.in_distribution is not None:
        return replace(config, qa=replace(qa, out_of_distribution=qa.out_of_distribution or ()))
    split = SPLITS.get(config.split or ("geonames" if source_name(config) == "geonames"
                                        else "slick"))
    in_dist = split.in_distribution
    ood = (qa.out_of_distribution if qa.out_of_distribution is not None
           else split.out_of_distribution)
    if config.entityquestions:
        from kgfact.data.entityquestions import available_relations

        present = set(available_relations(Path(config.entityquestions)))
        in_dist = tuple(p for p in in_dist if p in present)
        ood = tuple(p for p in ood if p in present)
    return replace(config, qa=replace(qa, in_distribution=in_dist, out_of_distribution=ood))


def run_stage(run: RunDir | str | Path, config: BuildConfig, *, progress: bool = True,
              force: bool = False, cache: bool = True) -> dict:
    """The build stage (:mod:`kgfact.stages`): starts the embedded store when the build uses it
    and has work to do, then :func:`build`."""
    run = RunDir.of(run)
    if source_name(config) == "geonames" and (force or not run.verified(STAGE)):
        ensure_embedded_store()
    return build(run, config, force=force, progress=progress,
                 cache_dir="default" if cache else None)


def ensure_embedded_store() -> None:
    """Start the embedded store unless it is running (saying so on stderr: the first start
    loads the offline dataset)."""
    import sys

    from kgfact.data.store import OxigraphStore

    store = OxigraphStore()
    if store.status() is None:
        print("kgfact: starting the embedded store (first start loads the offline default "
              "dataset)", file=sys.stderr)
        state = store.start()
        print(f"kgfact: embedded store running at {state['url']}", file=sys.stderr)


def build(run: RunDir | str | Path, config: BuildConfig, *, force: bool = False,
          progress: bool = True, cache_dir: Path | None | str = "default") -> dict:
    """Build QA data into ``run``; returns the build report.

    A build whose stage is already complete with the same configuration is not repeated; a
    different configuration, or an embedded store loaded since, needs ``force=True`` (or another
    run directory). The report's ``source`` names the endpoint and its data version.
    """
    run = RunDir.of(run)
    given, config = config, resolved(config)
    previous = run.stage_entry(STAGE)
    same = previous.get("config") == config_json(given)
    if previous.get("status") == "complete" and not force:
        if not same:
            raise KgfactError(f"{run.path} was built with a different configuration; "
                              "use --force to rebuild it or choose another --run")
        built_from = previous.get("report", {}).get("source", {})
        if built_from.get("data_version") and _loaded_version(built_from) not in (
                None, built_from["data_version"]):
            raise KgfactError(f"{run.path} was built before the embedded store was loaded "
                              "again; use --force to rebuild it or choose another --run")
        if run.verified(STAGE):  # else a table is missing: build again
            return {**previous.get("report", {}), "skipped": True}
    checkpoints = None
    with run.stage(STAGE, config_json(given), seed=config.qa.seed) as info:
        if config.entityquestions:
            triples, entities, qa, source_report = _from_entityquestions(config)
        else:
            source = _source(config.endpoint)
            url, version = source["url"], source["data_version"]
            checkpoints = _checkpoint_dir(run, given, version or url)
            endpoint = EndpointConfig(url=url, timeout=config.timeout,
                                      deadline=config.query_deadline,
                                      total_deadline=config.fetch_deadline,
                                      user_agent=config.user_agent, data_version=version)
            if cache_dir != "default":
                endpoint = replace(endpoint, cache_dir=Path(cache_dir) if cache_dir else None)
            fetch = FetchConfig(relations=config.qa.relations, page_size=config.page_size,
                                max_triples_per_relation=config.max_triples_per_relation,
                                expand_hops=config.expand_hops)
            try:
                result = GraphFetcher(SparqlClient(endpoint), fetch, checkpoints, progress).run()
                triples, entities, source_report = result.triples, result.entities, result.report
                qa, qa_report = build_qa(triples, entities, config.qa)
            except KgfactError as exc:
                if (source["store"] is None or given.split is not None
                        or given.qa.in_distribution is not None):
                    raise
                # the relations came from the default (slick) split of an endpoint: on a kgfact
                # store, the GeoNames relations its offline data has are likelier meant
                raise KgfactError(f"{exc}; {url} is a kgfact store, whose offline data hold "
                                  "the GeoNames relations: add --split geonames (or name "
                                  "--relations)") from None
            source_report = {"source": source,
                             "fetch": source_report, "qa": qa_report}
        two_hop, two_hop_report = build_two_hop(triples, entities, config.qa)
        if len(qa) == 0:
            raise KgfactError("no questions survived the filters; see the report with "
                              f"'kgfact info {run.path}'")
        for name, table in (("triples", triples), ("entities", entities), ("qa", qa),
                            ("qa_two_hop", two_hop)):
            run.write_table(name, table)
        report = {**source_report, "two_hop": two_hop_report,
                  "questions": _split_counts(qa), "two_hop_questions": _split_counts(two_hop)}
        info["report"] = report
    if checkpoints is not None:
        shutil.rmtree(checkpoints, ignore_errors=True)  # the tables now hold everything
    return report


def _checkpoint_dir(run: RunDir, config: BuildConfig, source: str) -> Path:
    """``checkpoints/build-<key>`` for this configuration and source; checkpoints of any other
    key are removed (they hold another source's or configuration's units). Called inside the
    build stage, whose lock (:meth:`RunDir.stage`) keeps another build from using them."""
    spec = json.dumps({"config": config_json(config), "source": source}, sort_keys=True)
    folder = run.path / "checkpoints" / f"{STAGE}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"
    for stale in folder.parent.glob(f"{STAGE}*"):
        if stale != folder:
            shutil.rmtree(stale, ignore_errors=True)
    return folder


def _split_counts(qa: pd.DataFrame) -> dict:
    counts = qa.groupby(["relation", "split"]).size()
    return {rel: {split: int(n) for split, n in counts[rel].items()}
            for rel in counts.index.get_level_values(0).unique()}


def _source(endpoint: str | None) -> dict:
    """The build report's ``source``: ``{"url", "data_version", "store"}``. For a kgfact store
    (the embedded one at its default location when ``endpoint`` is None, or any running one a
    loopback ``endpoint`` reaches, :func:`kgfact.data.store.store_serving`) its data version
    and location; for any other endpoint None and None (its answers are cached by URL and
    query)."""
    from kgfact.data.store import OxigraphStore, store_serving

    if endpoint is None:
        store = OxigraphStore()
        if store.status() is None:
            raise KgfactError("the embedded store is not running: start it with 'kgfact store "
                              "start', or pass --endpoint URL")
        endpoint = store.query_url
    else:
        store = store_serving(endpoint)
    if store is None:
        return {"url": endpoint, "data_version": None, "store": None}
    return {"url": endpoint, "data_version": store.data_version, "store": str(store.location)}


def _loaded_version(source: dict) -> str | None:
    """The data version of the store a build report's ``source`` names if its last load
    completed, else None (no server needed: a complete run is checked without starting the
    store). A report without ``store`` was built from the default location."""
    from kgfact.data.store import OxigraphStore, StoreConfig

    store = OxigraphStore(StoreConfig(location=Path(source["store"])) if source.get("store")
                          else None)
    with suppress(KgfactError):
        return store.data_version
    return None


def _from_entityquestions(config: BuildConfig):
    from kgfact.data.entityquestions import load_entityquestions

    imported = load_entityquestions(Path(config.entityquestions),
                                    relations=list(config.qa.relations))
    report = {"import": imported.report}
    in_dist = set(config.qa.in_distribution)
    qa = imported.qa.assign(distribution=imported.qa["relation"].map(
        lambda pid: "id" if pid in in_dist else "ood"))
    qa = drop_ambiguous(qa, report)
    if config.qa.max_questions_per_relation is not None:
        qa = sample_per_group(qa, ["relation", "split"], config.qa.max_questions_per_relation,
                              config.qa.seed)
    qa = drop_leakage(qa, config.qa.leakage_filter, report)
    return imported.triples, imported.entities, finish(qa, QA_COLUMNS), report
