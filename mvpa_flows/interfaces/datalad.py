"""DataLad-aware inputs: fetch only the annexed files a run needs.

In a DataLad dataset the content of large files lives in git-annex; after a clone the
files are symbolic links whose content has not been retrieved. These helpers find
which of the files a run will read lack content and fetch just those with
:func:`datalad.api.get`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from mvpa_flows.core.errors import InputValidationError

logger = logging.getLogger("mvpa_flows")


def dataset_root(path):
    """Return the root of the DataLad dataset holding ``path``, or None."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        if (folder / ".datalad").is_dir() and (folder / ".git").exists():
            return folder
    return None


def content_missing(path):
    """True when ``path`` is an annexed file whose content is not present."""
    path = Path(path)
    return path.is_symlink() and not path.exists()


def missing_content(paths: Iterable) -> list[str]:
    """The paths among ``paths`` whose annexed content is absent (sorted, unique)."""
    return sorted({str(Path(p).absolute()) for p in paths if p and content_missing(p)})


def fetch(paths: Iterable, jobs: int = 1, enabled: bool = True) -> list[str]:
    """Fetch the content of every annexed file in ``paths`` that lacks it.

    Parameters
    ----------
    paths : files the run will read
    jobs : parallel transfers (``--nprocs``)
    enabled : False (``--no-datalad-get``) only checks the content is present

    Returns
    -------
    list of str
        The files that were fetched.

    Raises
    ------
    InputValidationError
        Naming the files without content and the remotes DataLad tried, when the
        content cannot be had.
    """
    missing = missing_content(paths)
    if not missing:
        return []
    if not enabled:
        raise InputValidationError(
            f"{len(missing)} input file(s) have no content in their DataLad dataset, e.g. "
            f"{_names(missing)}; fetch them (datalad get ...) or drop --no-datalad-get."
        )
    import datalad.api as dl

    logger.info("Fetching %d annexed input file(s) with DataLad", len(missing))
    by_dataset: dict[Path, list[str]] = {}
    for path in missing:
        root = dataset_root(path)
        by_dataset.setdefault(root, []).append(path)
    failures = []
    for root, files in by_dataset.items():
        results = dl.get(
            path=files,
            dataset=str(root) if root else None,
            jobs=max(1, int(jobs)),
            on_failure="ignore",
            result_renderer="disabled",
            return_type="list",
        )
        failures += [r for r in results if r.get("status") in ("error", "impossible")]
    still = missing_content(missing)
    if failures or still:
        messages = sorted({_message(r) for r in failures})
        remotes = sorted({name for root in by_dataset if root for name in _remotes(root)})
        raise InputValidationError(
            f"DataLad could not fetch {len(still) or len(failures)} input file(s), e.g. "
            f"{_names(still or [r.get('path', '?') for r in failures])}. Remotes tried: "
            f"{remotes or 'none configured'}. DataLad said: {'; '.join(messages)[:600]}. "
            "Check the dataset's siblings (datalad siblings) and that the remote is "
            "reachable, or fetch the files yourself."
        )
    return missing


def _names(paths, limit=5):
    shown = []
    for path in list(paths)[:limit]:
        root = dataset_root(path)
        shown.append(str(Path(path).relative_to(root)) if root else str(path))
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    where = dataset_root(next(iter(paths))) if paths else None
    return ", ".join(shown) + more + (f" (in {where})" if where else "")


def _message(result):
    message = result.get("message")
    if isinstance(message, (list, tuple)) and message:
        try:
            message = message[0] % tuple(message[1:])
        except TypeError:
            message = " ".join(map(str, message))
    return f"{Path(result.get('path', '?')).name}: {message or result.get('status')}"


def _remotes(root):
    import subprocess

    out = subprocess.run(["git", "-C", str(root), "remote"], capture_output=True, text=True)
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def sidecars_of(subjects, *roots):
    """JSON files that pybids reads as metadata for ``subjects`` in each of ``roots``."""
    found = []
    for root in roots:
        root = Path(root)
        found += [p for p in root.glob("*.json")]
        for subject in subjects:
            found += list((root / f"sub-{subject}").rglob("*.json"))
    return found
