"""kgfact: measure and explain how fine-tuning data changes what a language model gets right.

The Python API (:mod:`kgfact.api`): :func:`run` runs a study as ``kgfact run`` does,
:func:`open_run` reads a run directory (:class:`Run`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"  # the one place it is written: the package metadata reads it here
__all__ = ["Run", "open_run", "run", "__version__"]


def __getattr__(name: str) -> Any:
    # loaded on first use: `import kgfact` (and `kgfact --version`) stays free of pandas and
    # the stages, and the modules below kgfact.api that import kgfact for its version do not
    # import the API through it
    if name in ("Run", "open_run", "run"):
        return getattr(importlib.import_module("kgfact.api"), name)
    raise AttributeError(f"module 'kgfact' has no attribute {name!r}")
