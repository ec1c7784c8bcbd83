"""Atomic file writing: a temporary file in the destination folder, then a rename.

A crash never leaves a half-written output; files get the usual permissions (the
process umask applied to 0o666), not the private mode of temporary files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dst):
    """Yield a temporary path beside ``dst``; rename it to ``dst`` if the block succeeds."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dst.suffixes[-2:]) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=suffix, dir=dst.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(src, dst):
    """Copy ``src`` to ``dst`` atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return str(dst)


def atomic_write_text(text, dst):
    """Write ``text`` to ``dst`` atomically (UTF-8)."""
    with atomic_path(dst) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return str(dst)
