"""Controlled prompts: pairs of exemplar strategies built to change one metric of ``G_P``.

The strategies themselves are the evaluation stage's (:data:`kgfact.prompts.STRATEGIES`). Here
each comparison is registered, before any run, with the metric it is meant to move and the order
of gaps the theory predicts: with the default ``A(P) = rel_align · prompt_known``, raising either
factor must shrink the gap, and a metric that ``A`` ignores must leave it unchanged; under CoT
``A`` is at least ``hop_support``, so a stated path to the answer must shrink it. The stage
reports, per comparison, the predicted and measured gaps with the bootstrap interval of their
difference, and the change of *every* metric between the two strategies (``d_<metric>``), which
shows whether the pair really moved only its own metric.
"""

from __future__ import annotations

from kgfact.prompts import PROMPT_MODES, STRATEGIES
from kgfact.registry import Registry
from kgfact.theory.predict import Control

CONTROLS: Registry[Control] = Registry("control")
CONTROLS.register("known-vs-unknown", Control(
    "known", "unknown", "prompt_known", "<",
    "known exemplars raise prompt_known, hence A, so the prompt closes more of the gap"))
CONTROLS.register("same-vs-other-relation", Control(
    "random", "other-relation", "rel_align", "<",
    "exemplars of the query relation raise rel_align, hence A"))
CONTROLS.register("from-d-vs-disjoint", Control(
    "from-ft", "disjoint", "ft_overlap_kn, ft_overlap_unk, entity_overlap", "=",
    "A does not depend on overlap with D, so the theory predicts no difference"))
CONTROLS.register("neighbourhood-vs-random", Control(
    "neighbourhood", "random", "query_neighbourhood_overlap", "=",
    "A does not use the query's neighbourhood, so the theory predicts no difference"))
CONTROLS.register("path-hint-vs-side-steps", Control(
    "path-hint", "side-steps", "hop_support", "<",
    "a hint whose next hop the model knows completes a path to the answer (hop_support 1, "
    "A = 1 under CoT); a side step leads nowhere near it (hop_support 0)", mode="cot"))
# a control must name strategies evaluation has: one naming none would silently give no rows
for _name in CONTROLS:
    for _strategy in (CONTROLS.get(_name).treatment, CONTROLS.get(_name).baseline):
        STRATEGIES.get(_strategy)
    PROMPT_MODES.get(CONTROLS.get(_name).mode)
