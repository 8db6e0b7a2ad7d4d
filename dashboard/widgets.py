"""Widgets shared by the pages."""
from __future__ import annotations

import streamlit as st

MAX_CHOICES = 1000  # run ids offered in a select box: a browser handles thousands slowly


def runs_multiselect(label: str, have: list[str], *, key: str, default: int,
                     most: int) -> list[str]:
    """A multiselect of run ids (`have`, newest first) bound to the URL: the MAX_CHOICES newest
    are offered, and any picked one (in the URL or the session); up to `most` picked, the
    `default` newest at first. A caption says when runs are left out of the choices."""
    asked = set(st.query_params.get_all(key)) | set(st.session_state.get(key, []))
    options = list(dict.fromkeys(have[:MAX_CHOICES] + [r for r in have if r in asked]))
    picked = st.multiselect(label, options, default=have[:default], max_selections=most,
                            key=key, bind="query-params")
    if len(options) < len(have):
        st.caption(f"The {len(options):,} newest of the {len(have):,} runs with results are "
                   "offered: narrow the filters or pick runs to compare to reach others.")
    return picked
