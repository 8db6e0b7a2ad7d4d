"""Factor pages and study reports: aggregates per factor level and group (95% intervals over
seeds), the studies that vary a factor, and paired comparisons of a factor's levels."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from .. import stats
from .core import Filters, by_version, check, query, with_runs
from .statuses import DIVERGED
from .runs import determined_by, distinct_keys, group_label_sql, key_sql, moments, varying_keys

# The factor pages' per-run quantities: key -> (SQL over the factor_table query's r, c and l
# relations, label shown in the table header, kind of interval; see dashboard.stats).
QUANTITIES = {name: (sql, label, kind) for name, sql, label, kind in (
    ("final_val_acc", "r.final_val_acc", "val accuracy", "fraction"),
    ("final_error", "1 - r.final_val_acc", "final error (1 - val acc)", "fraction"),
    ("final_train_loss", "r.final_train_loss", "train loss", "positive"),
    ("final_val_loss", "r.final_val_loss", "val loss", "positive"),
    ("generalization_gap", "r.generalization_gap", "gap (val - train loss)", "real"),
    ("conv_epoch", "c.conv_epoch", "convergence epoch", "nonneg"),
    ("avg_cond", "l.avg_cond", "avg condition number", "positive"),
    ("spectral_norm", "l.spectral_norm", "spectral norm", "positive"),
    ("eff_rank_ratio", "l.eff_rank_ratio", "effective-rank ratio", "fraction"),
    ("grad_norm", "l.grad_norm", "gradient norm", "positive"),
    ("peak_mem_mb", "l.peak_mem_mb", "peak memory (MB)", "nonneg"),
    ("wall_time", "r.total_time", "wall time (s)", "nonneg"))}


def studies_varying(runs: pd.DataFrame, factor: str) -> list[str]:
    """Studies among `runs` in which `factor` takes several values, largest first."""
    if "study" not in runs or runs.empty:
        return []
    sizes = runs.groupby(runs["study"].fillna(""))[factor].agg(
        lambda s: s.astype(str).nunique())
    counts = runs["study"].fillna("").value_counts()
    return sorted([s for s, n in sizes.items() if n > 1], key=lambda s: (-counts[s], s))


def default_groups(runs: pd.DataFrame, factor: str) -> list[str]:
    """Every other config key that varies among the runs (seeds excluded: they are the
    replicates), leaving out keys that the factor determines."""
    others = [k for k in varying_keys(runs, exclude=("seed", factor))]
    return distinct_keys(runs, [k for k in others if k not in determined_by(runs, factor, others)])


@by_version("runs", "epochs")
def factor_table(root: str, f: Filters, keys: tuple[str, ...], conv_fraction: float = 0.9
                 ) -> pd.DataFrame:
    """Per group of runs sharing the `keys` values: run counts and, per quantity, its centre,
    95% interval over the group's runs and n (finite values).

    Convergence epoch = first epoch whose val_acc reaches conv_fraction x the run's best val_acc.
    Non-finite values (diverged runs) are left out; `diverged` counts those runs."""
    cols = key_sql(keys)
    head, params = with_runs(f)
    aggs = moments({q: (expr, kind) for q, (expr, _, kind) in QUANTITIES.items()})
    select = ", ".join(f"{c} AS {k}" for c, k in zip(cols, keys))
    df = query(root, f"""
        {head},
        e AS (SELECT * FROM epochs WHERE run_id IN (SELECT run_id FROM r)),
        best AS (SELECT run_id, max(val_acc) AS best FROM e GROUP BY run_id),
        c AS (SELECT e.run_id, min(e.epoch) AS conv_epoch FROM e JOIN best USING (run_id)
              WHERE e.val_acc >= ? * best.best GROUP BY e.run_id),
        l AS (SELECT run_id,
                     arg_max(avg_cond, epoch) FILTER (WHERE isfinite(avg_cond)) AS avg_cond,
                     arg_max(avg_spectral_norm, epoch) FILTER (WHERE isfinite(avg_spectral_norm))
                         AS spectral_norm,
                     arg_max(avg_eff_rank_ratio, epoch)
                         FILTER (WHERE isfinite(avg_eff_rank_ratio)) AS eff_rank_ratio,
                     arg_max(grad_norm, epoch) FILTER (WHERE isfinite(grad_norm)) AS grad_norm,
                     max(peak_mem_mb) AS peak_mem_mb
              FROM e GROUP BY run_id)
        SELECT {select + ',' if select else ''} {group_label_sql(keys)} AS "group",
               count(*) AS runs,
               count(*) FILTER (WHERE r.status = '{DIVERGED}' OR r.diverged_epoch IS NOT NULL)
                   AS diverged,
               {aggs}
        FROM r LEFT JOIN c USING (run_id) LEFT JOIN l USING (run_id)
        GROUP BY ALL ORDER BY ALL""", params + [conv_fraction])
    for q, (_, _, kind) in QUANTITIES.items():
        df = stats.add_interval(df, q, kind)
    return df


@by_version("runs")
def run_points(root: str, f: Filters, keys: tuple[str, ...], value: str) -> pd.DataFrame:
    """One row per filtered run: its group label and a per-run quantity (for groups of one and
    distribution plots)."""
    expr = QUANTITIES[check([value], QUANTITIES, "quantity")[0]][0]
    head, params = with_runs(f)
    return query(root, f"""
        {head}
        SELECT r.run_id, {group_label_sql(keys)} AS "group", {expr} AS {value}
        FROM r WHERE {expr} IS NOT NULL ORDER BY "group", {value}""", params)


# ----------------------------------------------------------------------------- paired
def paired_table(measures: pd.DataFrame, factor: str, baseline, match: list[str],
                 quantities: dict[str, str]) -> pd.DataFrame:
    """Each level of `factor` against `baseline` within configurations that match on `match`
    (every other varying key): per configuration, level and quantity {name: kind}, the
    difference (or ratio for positive quantities) with its 95% interval over seeds. Seeds
    present at both levels are paired (paired t-test); otherwise Welch's test on all runs."""
    df = measures.reset_index(drop=True)
    config = (functools.reduce(lambda a, b: a + " · " + b, (df[k].astype(str) for k in match))
              if match else pd.Series("all runs", index=df.index))
    is_base = (df[factor].astype(str) == str(baseline)).to_numpy()
    seed = df["seed"].to_numpy()
    has_seed = df["seed"].notna().to_numpy()
    values = {q: pd.to_numeric(df[q], errors="coerce").to_numpy(float) for q in quantities}
    ok = {q: has_seed & ~np.isnan(v) for q, v in values.items()}
    codes, levels = pd.factorize(df[factor], sort=True)  # missing levels: -1, left out
    levels = list(levels)
    rows, pairs = [], []
    for cfg, idx in sorted(df.groupby(config).indices.items()):
        base_idx = idx[is_base[idx]]
        if not len(base_idx):
            continue
        for code in np.unique(codes[idx]):
            level = levels[code]
            if code < 0 or str(level) == str(baseline):
                continue
            other = idx[codes[idx] == code]
            for q, kind in quantities.items():
                a_idx, b_idx = base_idx[ok[q][base_idx]], other[ok[q][other]]
                common = sorted(set(seed[a_idx]) & set(seed[b_idx]))
                paired = len(common) >= 2
                if paired:  # each seed's runs, seeds in order
                    a_idx = np.concatenate([a_idx[seed[a_idx] == s] for s in common])
                    b_idx = np.concatenate([b_idx[seed[b_idx] == s] for s in common])
                if not len(a_idx) or not len(b_idx):
                    continue
                rows.append({"configuration": cfg, factor: level, "baseline": baseline,
                             "quantity": q})
                pairs.append((values[q][a_idx], values[q][b_idx], kind, paired))
    return pd.DataFrame([{**row, **res} for row, res in zip(rows, stats.compare_many(pairs))])


def match_keys(measures: pd.DataFrame, factor: str) -> list[str]:
    """The keys a paired comparison matches on: every other varying key except the seed and
    those the factor determines."""
    return default_groups(measures, factor)

