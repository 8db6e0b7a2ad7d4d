"""Analyses of a finished loss-surface grid, NumPy only (no torch): summaries (``summary``),
wavelet energies (``wavelets``), sublevel persistence (``topology``), a Gaussian fit
(``gaussfit``)."""
