"""The statistics the dashboard reports: 95% confidence intervals over seeds, paired and unpaired
comparisons of two factor levels, Kendall's tau. numpy, pandas and SciPy only (no Streamlit).

Every interval is a Student-t interval over the runs of a group (over seeds when the group fixes
every other config key), computed on the quantity's own scale and kept inside its range:
    fraction  accuracies, shares: the interval is clipped to [0, 1]
    positive  losses, eigenvalues, traces, condition numbers: on the log scale (a geometric mean
              and an interval that cannot cross 0); groups holding a value <= 0 fall back to the
              plain interval clipped at 0
    nonneg    times, memory: the plain interval clipped at 0
    real      anything else (gaps, differences): the plain interval
A group of one run has its value and no interval (n is always shown next to it).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

LEVEL = 0.95
RANGES = {"fraction": (0.0, 1.0), "positive": (0.0, math.inf), "nonneg": (0.0, math.inf),
          "real": (-math.inf, math.inf)}


def t_quantile(n) -> np.ndarray:
    """The two-sided 95% Student-t quantile for n values (NaN for n < 2)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(n >= 2, sps.t.ppf(0.5 + LEVEL / 2, np.maximum(n - 1, 1)), np.nan)


def interval(mean, sd, n, kind: str = "real", log_mean=None, log_sd=None, log_n=None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, lo, hi) from per-group moments (arrays): the mean, or for `positive` groups whose
    values are all > 0 the geometric mean, with the 95% interval of that centre."""
    mean, sd, n = (np.asarray(a, dtype=float) for a in (mean, sd, n))
    half = t_quantile(n) * sd / np.sqrt(np.maximum(n, 1))
    centre, lo, hi = mean.copy(), mean - half, mean + half
    if kind == "positive" and log_mean is not None:
        log_mean, log_sd, log_n = (np.asarray(a, dtype=float) for a in (log_mean, log_sd, log_n))
        use = (log_n == n) & (n >= 1)
        log_half = t_quantile(log_n) * log_sd / np.sqrt(np.maximum(log_n, 1))
        with np.errstate(over="ignore", invalid="ignore"):
            centre = np.where(use, np.exp(log_mean), centre)
            lo = np.where(use, np.exp(log_mean - log_half), lo)
            hi = np.where(use, np.exp(log_mean + log_half), hi)
    low, high = RANGES[kind]
    return centre, np.clip(lo, low, high), np.clip(hi, low, high)


def summarize(values, kind: str = "real") -> dict:
    """{centre, lo, hi, n} of one group's finite values."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"centre": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    logs = np.log(v[v > 0])
    c, lo, hi = interval([v.mean()], [v.std(ddof=1) if len(v) > 1 else math.nan], [len(v)],
                         kind, [logs.mean() if len(logs) else math.nan],
                         [logs.std(ddof=1) if len(logs) > 1 else math.nan], [len(logs)])
    return {"centre": float(c[0]), "lo": float(lo[0]), "hi": float(hi[0]), "n": int(len(v))}


def add_interval(df: pd.DataFrame, q: str, kind: str) -> pd.DataFrame:
    """From columns {q}_avg, {q}_sd, {q}_n (and {q}_lavg, {q}_lsd, {q}_ln for the log scale),
    as the data layer's aggregates return them, add {q} (centre), {q}_lo and {q}_hi."""
    logs = [df.get(f"{q}_{s}") for s in ("lavg", "lsd", "ln")]
    c, lo, hi = interval(df[f"{q}_avg"], df[f"{q}_sd"], df[f"{q}_n"], kind,
                         *(logs if logs[0] is not None else (None, None, None)))
    out = df.drop(columns=[c_ for c_ in df.columns if c_.startswith(f"{q}_")
                           and c_[len(q) + 1:] in ("avg", "sd", "lavg", "lsd", "ln")])
    out[q], out[f"{q}_lo"], out[f"{q}_hi"] = c, lo, hi
    return out


# ----------------------------------------------------------------------------- comparisons
def compare(a, b, kind: str, paired: bool) -> dict:
    """Level b against baseline a: a difference (b - a) or, for positive quantities, a ratio
    (b / a, on the log scale), with its 95% interval and p-value: a paired t-test over matched
    seeds when `paired` (a[i] and b[i] share a seed), else Welch's unequal-variance test."""
    return compare_many([(a, b, kind, paired)])[0]


def _moments(a, b, kind: str, paired: bool) -> tuple[dict, bool, float, float, float, bool]:
    """(head of the result, ratio?, estimate, its standard error, degrees of freedom,
    testable?) of one comparison; see compare()."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    ratio = bool(kind == "positive" and (a > 0).all() and (b > 0).all() and len(a) and len(b))
    if ratio:
        a, b = np.log(a), np.log(b)
    head = {"effect": "ratio" if ratio else "difference", "n_a": len(a), "n_b": len(b),
            "paired": bool(paired)}
    if paired:
        d = b - a
        n = len(d)
        est = d.mean() if n else math.nan
        se = d.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
        return head, ratio, est, se, n - 1 if n > 1 else math.nan, bool(n > 1 and d.std() > 0)
    est = b.mean() - a.mean() if len(a) and len(b) else math.nan
    va = a.var(ddof=1) / len(a) if len(a) > 1 else math.nan
    vb = b.var(ddof=1) / len(b) if len(b) > 1 else math.nan
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 \
        else math.nan
    return head, ratio, est, se, dof, bool(se > 0)


def compare_many(pairs) -> list[dict]:
    """compare() of many (a, b, kind, paired) at once: the t quantiles and p-values (the same
    as SciPy's ttest_rel and Welch's ttest_ind) in one vectorised call, not one per pair."""
    parts = [_moments(*pair) for pair in pairs]
    if not parts:
        return []
    est, se, dof = (np.array([p[i] for p in parts], dtype=float) for i in (2, 3, 4))
    testable = np.array([p[5] for p in parts])
    with np.errstate(all="ignore"):
        half = sps.t.ppf(0.5 + LEVEL / 2, dof) * se
        pval = np.where(testable, 2 * sps.t.sf(np.abs(est / se), dof), math.nan)
    out = []
    for (head, ratio, *_), e, h, p in zip(parts, est, half, pval):
        lo, hi = e - h, e + h
        if ratio:
            e, lo, hi = math.exp(e), math.exp(lo), math.exp(hi)
        out.append({**head, "estimate": float(e), "lo": float(lo), "hi": float(hi),
                    "p_value": float(p)})
    return out


def kendall(df: pd.DataFrame, xs, ys) -> pd.DataFrame:
    """Kendall's tau (scipy.stats.kendalltau) of every (x, y) pair over rows finite in both."""
    rows = []
    for x in xs:
        for y in ys:
            pair = df[[x, y]].apply(pd.to_numeric, errors="coerce").replace(
                [math.inf, -math.inf], math.nan).dropna()
            tau, p = (sps.kendalltau(pair[x], pair[y]) if len(pair) >= 3
                      else (math.nan, math.nan))
            rows.append({"sharpness": x, "against": y, "tau": float(tau), "p_value": float(p),
                         "runs": len(pair)})
    return pd.DataFrame(rows)
