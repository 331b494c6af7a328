"""Where bertctl keeps what it can rebuild: the tokenize cache, the metric modules' scratch dirs.

    cache_root() / "tokenized"     # $BERTCTL_CACHE, else $XDG_CACHE_HOME/bertctl, else ~/.cache/bertctl
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("BERTCTL_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bertctl"
