"""Atomic outputs: a stage either leaves its complete output or none at all.

Everything is written under a temporary sibling name and moved into place with ``os.replace``
(atomic on one filesystem), so an interrupted stage never leaves a file a later run would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(final: str | os.PathLike[str], directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success move it to ``final``.

    With ``directory=True`` the temporary path is an empty directory. On any exception
    (KeyboardInterrupt included) the temporary path is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp if directory else tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)  # os.replace cannot replace a non-empty directory
        os.replace(target, final)
    finally:
        _discard(tmp)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
