"""dashboard.stats.compare_many (the paired tables of the factor pages and study reports) against
SciPy's own tests, pair by pair: one vectorised call must give what ttest_rel and Welch's
ttest_ind give for each comparison, including degenerate ones."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from dashboard import stats


def test_compare_many_equals_scipy_pair_by_pair():
    rng = np.random.default_rng(0)
    pairs = []
    for n_a, n_b, paired, kind in [(3, 3, True, "real"), (5, 5, True, "positive"),
                                   (4, 7, False, "real"), (2, 3, False, "positive"),
                                   (6, 2, False, "fraction")]:
        a = rng.lognormal(0.0, 0.5, n_a)
        b = rng.lognormal(0.3, 0.5, n_b)
        pairs.append((a, b, kind, paired))
    pairs.append((np.array([1.0, 2.0]), np.array([1.0, 2.0]), "real", True))  # d = 0: no test
    pairs.append((np.array([1.0]), np.array([2.0]), "real", False))  # n = 1: no interval
    got = stats.compare_many(pairs)
    for (a, b, kind, paired), res in zip(pairs, got):
        assert res == pytest.approx(stats.compare(a, b, kind, paired), nan_ok=True)
        ratio = kind == "positive"
        x, y = (np.log(a), np.log(b)) if ratio else (a, b)
        if paired:
            d = y - x
            want_p = sps.ttest_rel(y, x).pvalue if d.std() > 0 else math.nan
            ci = sps.ttest_rel(y, x).confidence_interval() if d.std() > 0 else None
        else:
            test = sps.ttest_ind(y, x, equal_var=False)
            want_p = test.pvalue if len(x) > 1 and len(y) > 1 else math.nan
            ci = test.confidence_interval() if len(x) > 1 and len(y) > 1 else None
        back = math.exp if ratio else float
        assert res["effect"] == ("ratio" if ratio else "difference")
        assert res["estimate"] == pytest.approx(back((y.mean() - x.mean())))
        if math.isnan(want_p):
            assert math.isnan(res["p_value"])
        else:
            assert res["p_value"] == pytest.approx(want_p, rel=1e-9)
        if ci is not None:
            assert (res["lo"], res["hi"]) == pytest.approx((back(ci.low), back(ci.high)))
