"""Short-answer generation for many prompts that share prefixes: the SliCK workload, made fast.

The package is one interface and its backends, each in its own module:

- :mod:`kgfact.sampling.base`: the interface (:class:`Request`, :class:`SamplingConfig`,
  :class:`Generation`, :class:`SamplingBackend`), the backend registry :data:`BACKENDS` with
  :func:`make_backend`, :func:`check_adapter` and :func:`recorded_backend`, and the rules every
  backend shares (:func:`cut_at_stop`, :func:`sample_stream`);
- :mod:`kgfact.sampling.engine`: the built-in engine, :class:`KgfactEngine` (``"kgfact"``);
- :mod:`kgfact.sampling.vllm`: vLLM, :class:`~kgfact.sampling.vllm.VllmEngine` (``"vllm"``);
- :mod:`kgfact.sampling.ray`: the built-in engine on Ray workers,
  :class:`~kgfact.sampling.ray.RayBackend` (``"ray"``).

Backends are registered by name as ``"module:Class"`` and imported when first started, so
importing this package imports neither vLLM nor Ray nor their modules (an import-linter
contract in ``pyproject.toml`` keeps it so). ``VllmEngine`` and ``RayBackend`` can still be
imported from here; their modules are imported then.
"""

from __future__ import annotations

from typing import Any

from kgfact.sampling.base import (BACKENDS, BackendConfig, BackendFactory, Generation, LazyBackend,
                                  Request,
                                  SamplingBackend, SamplingConfig, check_adapter, cut_at_stop,
                                  load_target, make_backend, recorded_backend, sample_stream)
from kgfact.sampling.engine import KgfactEngine

__all__ = ["BACKENDS", "BackendConfig", "BackendFactory", "Generation", "KgfactEngine", "LazyBackend", "Request",
           "SamplingBackend", "SamplingConfig", "check_adapter", "cut_at_stop", "load_target",
           "make_backend", "recorded_backend", "sample_stream"]

# names importable from here whose modules load only when asked for (by string, not an import
# statement, so the import graph import-linter checks has no edge to them either)
_LAZY = {"VllmEngine": "kgfact.sampling.vllm:VllmEngine",
         "RayBackend": "kgfact.sampling.ray:RayBackend"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return load_target(_LAZY[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
