"""Where kgfact keeps caches: ``$KGFACT_HOME`` (default ``~/.cache/kgfact``)."""

from __future__ import annotations

import os
from pathlib import Path


def kgfact_home() -> Path:
    """The cache root: SPARQL response cache, the embedded store, converted models."""
    env = os.environ.get("KGFACT_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "kgfact"
