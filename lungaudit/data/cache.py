"""The local cache: where the synthetic default data set is generated once and reused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from lungaudit.config import SynthConfig, to_dict


def cache_root() -> Path:
    """``$LUNGAUDIT_CACHE``, else ``~/.cache/lungaudit``."""
    return Path(os.environ.get("LUNGAUDIT_CACHE", "~/.cache/lungaudit")).expanduser()


def synthetic_default(cfg: SynthConfig, message: Callable[[str], None] | None = None) -> Path:
    """The synthetic benchmark for ``cfg``, generated into the cache on first use.

    The folder name hashes the generator config and version, and a ``.complete`` marker is written
    last, so a generation that was interrupted is detected and redone rather than silently trained on.
    """
    from lungaudit.data.synth import GENERATOR_VERSION, generate

    identity = {"generator_version": GENERATOR_VERSION, **to_dict(cfg)}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / f"synth-{key}"
    if (out / ".complete").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    if message:
        message(f"generating the synthetic benchmark into {out}")
    generate(out, cfg)
    (out / ".complete").write_text("ok\n")
    return out


__all__ = ["cache_root", "synthetic_default"]
