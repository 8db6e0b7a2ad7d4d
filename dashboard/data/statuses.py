"""The status names the data layer's SQL uses, checked at import against the library's lists
(landscape_lib.store.schema), so a renamed status fails here rather than matching nothing."""
from __future__ import annotations

from landscape_lib.store.schema import ANALYSIS_STATUSES, RUN_STATUSES


def _status(name: str, statuses: tuple) -> str:
    """A status name the SQL below uses, checked against the library's list at import."""
    if name not in statuses:
        raise ImportError(f"status '{name}' is not one of the store's {statuses}")
    return name


DONE = _status("done", ANALYSIS_STATUSES)       # a finished analysis
FINISHED = _status("finished", RUN_STATUSES)
DIVERGED = _status("diverged", RUN_STATUSES)
