"""Multiscale analysis of a loss-surface grid with a 2-D discrete wavelet transform (PyWavelets).

`pywt.wavedec2` splits a grid into one coarse approximation and, per level, three detail images
(horizontal, vertical, diagonal). Levels are numbered as in the wavelet literature: 1 is the
finest detail, `n` the coarsest; the approximation belongs to level `n`.

For an orthogonal wavelet (haar, dbN, symN, coifN) the transform preserves energy (Parseval) when
no boundary padding is needed: always with `mode="periodization"` on sides divisible by 2**levels,
and for haar on even sides in any mode. Otherwise the boundary extension adds a little energy.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pywt

from ...errors import ConfigError

DETAIL_KINDS = ("horizontal", "vertical", "diagonal")


def _as_grid(Z) -> np.ndarray:
    Z = np.asarray(Z, dtype=float)
    if Z.ndim != 2:
        raise ConfigError(f"a surface grid must be 2-D, got shape {Z.shape}")
    if not np.isfinite(Z).all():
        raise ConfigError("surface grid has non-finite values; wavelets need a finite grid")
    return Z


def _coefficients(Z, wavelet: str, levels: int | None, mode: str):
    """Yield (level, kind, 2-D coefficient array), coarsest first, in pywt's order."""
    Z = _as_grid(Z)
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ConfigError(f"unknown discrete wavelet '{wavelet}'; e.g. haar, db2, sym4, coif1")
    max_level = pywt.dwtn_max_level(Z.shape, wavelet)
    if levels is None:
        levels = max(max_level, 1)
    if not 1 <= levels <= max(max_level, 1):
        raise ConfigError(f"levels must be between 1 and {max(max_level, 1)} for a {Z.shape} grid "
                          f"and wavelet '{wavelet}', got {levels}")
    coeffs = pywt.wavedec2(Z, wavelet, mode=mode, level=levels)
    yield levels, "approx", coeffs[0]
    # coeffs[1] holds the coarsest details (level `levels`), coeffs[-1] the finest (level 1).
    for offset, details in enumerate(coeffs[1:]):
        for kind, array in zip(DETAIL_KINDS, details):
            yield levels - offset, kind, array


def wavelet_decomposition(Z, wavelet: str = "haar", levels: int | None = None,
                          mode: str = "symmetric") -> pd.DataFrame:
    """All wavelet coefficients of grid `Z` as rows (level, kind, i, j, coefficient).

    kind is approx | horizontal | vertical | diagonal; (i, j) index the coefficient array of that
    level and kind. levels=None uses the deepest level pywt allows for the grid and wavelet.
    """
    frames = []
    for level, kind, array in _coefficients(Z, wavelet, levels, mode):
        i, j = np.indices(array.shape)
        frames.append(pd.DataFrame({"level": level, "kind": kind, "i": i.ravel(),
                                    "j": j.ravel(), "coefficient": array.ravel()}))
    return pd.concat(frames, ignore_index=True)


def wavelet_energy(Z, wavelet: str = "haar", levels: int | None = None,
                   mode: str = "symmetric") -> pd.DataFrame:
    """Energy (sum of squared coefficients) per (level, kind); see the module note on Parseval."""
    rows = [{"level": level, "kind": kind, "energy": float(np.sum(array ** 2))}
            for level, kind, array in _coefficients(Z, wavelet, levels, mode)]
    return pd.DataFrame(rows, columns=["level", "kind", "energy"])


def coefficients_to_pywt(decomposition: pd.DataFrame) -> list:
    """Rebuild pywt's coefficient list from `wavelet_decomposition` rows (for pywt.waverec2)."""
    def array(level, kind):
        part = decomposition[(decomposition.level == level) & (decomposition.kind == kind)]
        shape = (part.i.max() + 1, part.j.max() + 1)
        out = np.empty(shape)
        out[part.i.to_numpy(), part.j.to_numpy()] = part.coefficient.to_numpy()
        return out

    top = int(decomposition.loc[decomposition.kind == "approx", "level"].iloc[0])
    return [array(top, "approx")] + [tuple(array(level, kind) for kind in DETAIL_KINDS)
                                     for level in range(top, 0, -1)]
