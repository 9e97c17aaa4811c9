"""The prompt-induced-subgraph theory of the factuality gap as code (docs: ``theory.md``).

- :mod:`~kgfact.theory.graphs`: ``G``, ``K`` / ``K_kn``, ``D`` / ``E_kn`` / ``E_unk`` and ``G_P``
  as integer-coded edge sets;
- :mod:`~kgfact.theory.metrics`: the per-query metrics and ``A(P)``, registered by name and
  computed for every (prompt, query) unit at once;
- :mod:`~kgfact.theory.reference`: the same metrics one query at a time with networkx;
- :mod:`~kgfact.theory.steps`: generated CoT steps read back into edges and checked against ``G``;
- :mod:`~kgfact.theory.predict`: the fit of ``α``, predicted vs measured gaps, bootstrap;
- :mod:`~kgfact.theory.controls`: the controlled comparisons and their predicted order;
- :mod:`~kgfact.theory.stage`: the ``kgfact theory`` stage on a run directory.
"""

from kgfact.theory.controls import CONTROLS
from kgfact.theory.graphs import (EdgeCodec, EdgeSet, FineTuningSet, ModelKnowledge,
                                  PromptSubgraph, flag_edges)
from kgfact.theory.metrics import (AUGMENTATIONS, METRICS, MetricConfig, MetricEngine,
                                   PromptTable)
from kgfact.theory.predict import (Control, GapStudy, PredictionConfig, bootstrap,
                                   relation_distances)
from kgfact.theory.stage import TheoryConfig, run_theory
from kgfact.theory.steps import StepParser, verify_steps

__all__ = [
    "AUGMENTATIONS", "CONTROLS", "METRICS", "Control", "EdgeCodec", "EdgeSet",
    "FineTuningSet", "GapStudy", "MetricConfig", "MetricEngine", "ModelKnowledge",
    "PredictionConfig", "PromptSubgraph", "PromptTable", "StepParser", "TheoryConfig",
    "bootstrap", "flag_edges", "relation_distances", "run_theory", "verify_steps",
]
