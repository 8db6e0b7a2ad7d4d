"""Per run of a study: accuracy and the convexity evidence of its newest Hessian analysis.

Issue 10 acceptance 7: accuracy, lambda_max, lambda_min with its residual (and whether it
converged), the convexity ratio |lambda_min / lambda_max|, the negative share (mass below
-eps * lambda_max, with its standard error over the SLQ probes) and the near-zero share, the
lowest SLQ Ritz node, the bottom Lanczos' own value (lambda_min is the lower of the two Ritz
values, both upper bounds of the true one), whether lambda_min <= the node (``below_ritz``) and
whether the Lanczos value agrees with the node within their residuals (``consistent``). The rows come
from ``landscape_lib.store.queries.hessian_study_table``.

    python bench/curvature_table.py --store runs --study A-vit-sam [--csv table.csv]
"""
from __future__ import annotations

import argparse

import pandas as pd

from landscape_lib.store import Store
from landscape_lib.store.queries import hessian_study_table

SHOWN = {"model_label": "model", "optimizer": "optimizer", "seed": "seed", "epoch": "epoch",
         "accuracy": "acc", "lambda_max": "lam_max", "lam_min": "lam_min",
         "lam_min_residual": "lam_min_res", "lam_min_converged": "converged",
         "convexity_ratio": "|min/max|", "neg_share": "neg_share", "neg_share_se": "se",
         "near_zero_share": "near_zero", "lowest_ritz": "lowest_ritz",
         "lam_min_lanczos": "lanczos",         "lam_min_below_ritz": "below_ritz", "lam_min_consistent": "consistent"}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="runs")
    p.add_argument("--study", required=True, help="the runs' study name, e.g. A-vit-sam")
    p.add_argument("--csv", help="also write the full table here")
    args = p.parse_args(argv)
    table = hessian_study_table(Store(args.store), args.study)
    if table.empty:
        raise SystemExit(f"no runs of study '{args.study}' in {args.store}")
    if args.csv:
        table.to_csv(args.csv, index=False)
    shown = table[list(SHOWN)].rename(columns=SHOWN)
    with pd.option_context("display.width", 250, "display.max_columns", 30,
                           "display.float_format", "{:.4g}".format):
        print(shown.to_string(index=False))
    done = table.dropna(subset=["lambda_max"])
    eps = sorted(done["neg_eps"].dropna().unique().tolist())
    print(f"\n{len(table)} runs, {len(done)} with a finished Hessian analysis (neg_eps {eps}); "
          f"lambda_min <= lowest Ritz node in {int(done['lam_min_below_ritz'].sum())}, "
          f"Lanczos and node agree within their residuals in {int(done['lam_min_consistent'].sum())}; lambda_min converged in "
          f"{int(done['lam_min_converged'].sum())}")


if __name__ == "__main__":
    main()
