"""The dashboard's one data layer: every query the pages make, one module per page family.

    core       the store's snapshot (a StoreReader), the sidebar's filters and the filtered-runs SQL
    runs       the run table, config keys, per-epoch curves
    factors    aggregates per factor level and group, paired comparisons, study reports
    curvature  Hessian spectra, per-layer curvature, per-run sharpness measures
    surfaces   2-D surfaces and the analyses derived from them
    attention  attention divergence and attention-Hessian sweeps
    lab        checkpoints and stored analyses of one run

Only these modules hold SQL (and the library's store); the pages hold none.
"""
