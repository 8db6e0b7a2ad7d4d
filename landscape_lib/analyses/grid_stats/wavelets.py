"""Multiscale analysis of a loss-surface grid: 2-D wavelet energies that partition the grid's
energy exactly, for every grid size.

Levels are numbered as in the wavelet literature: 1 is the finest detail, ``n`` the coarsest;
the approximation belongs to level ``n``. Each level has three detail images, labelled as pywt
labels them: horizontal = detail along axis 0 (rows, i.e. y), vertical = along axis 1 (x),
diagonal = both.

Why pywt alone does not do: it extends an odd-length input at the border; in its 'symmetric'
(default) and 'periodization' modes an odd side is extended by repeating its last sample, so
that sample's energy is counted twice at every level (2-4x the grid's energy on 21 x 21 loss
surfaces, whose border is high). For an orthogonal wavelet, 'periodization' is an orthogonal
transform exactly when both sides are divisible by 2**levels; 'zero' is an isometry for every
size (zero extension in l2(Z); expansive: more coefficients than samples) but puts a spurious
jump to 0 at the border into the details; no other pywt mode preserves energy on odd sides.

Default ``wavelet="haar"``: the **unbalanced Haar transform** (Girardi and Sweldens 1997, J.
Fourier Anal. Appl. 3; Fryzlewicz 2007, JASA 102). At each level consecutive blocks are paired
(0,1), (2,3), ...; blocks of n1 and n2 samples with means m1, m2 give

    approx = (block sums) / sqrt(n1 + n2)        detail = sqrt(n1 n2 / (n1 + n2)) (m1 - m2)

and an odd last block passes to the next level unpaired. Every pair step is a 2 x 2 orthogonal
matrix, so the 2-D transform (rows then columns per level, as pywt.wavedec2) is orthonormal
for every grid size and non-expansive: the energies of all coefficients add up to sum(Z**2)
exactly, a constant grid has no detail energy, and when both sides are divisible by 2**levels
it is identical to pywt's Haar transform. Mode "unbalanced-haar".

Other wavelets (orthogonal ones only: dbN, symN, coifN) go through pywt with mode
'periodization' when the sides are divisible by 2**levels, else 'zero' (exact, with the border
artefact above). Biorthogonal wavelets are refused: their coefficients do not partition the
energy. Every energy row says which ``mode`` was used and its ``share`` of the grid's energy.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pywt

from ...errors import ConfigError

DETAIL_KINDS = ("horizontal", "vertical", "diagonal")
UNBALANCED = "unbalanced-haar"


# ----------------------------------------------------------------------------- 1-D steps
def _pair_weights(n: np.ndarray):
    """Rotation (c, s) of each pair of blocks with sizes n[0::2], n[1::2]; new block sizes."""
    n1, n2 = n[0:len(n) - 1:2], n[1::2]
    total = n1 + n2
    c, s = np.sqrt(n1 / total), np.sqrt(n2 / total)
    merged = np.concatenate([total, n[-1:]]) if len(n) % 2 else total
    return c, s, merged


def _analysis_step(a: np.ndarray, n: np.ndarray, axis: int):
    """One level along ``axis``: (approx, detail, new block sizes); orthogonal."""
    a = np.moveaxis(a, axis, 0)
    c, s, merged = _pair_weights(n)
    shape = (-1,) + (1,) * (a.ndim - 1)
    c, s = c.reshape(shape), s.reshape(shape)
    a1, a2 = a[0:len(a) - 1:2], a[1::2]
    approx = c * a1 + s * a2
    detail = s * a1 - c * a2
    if len(a) % 2:
        approx = np.concatenate([approx, a[-1:]], axis=0)
    return np.moveaxis(approx, 0, axis), np.moveaxis(detail, 0, axis), merged


def _synthesis_step(approx: np.ndarray, detail: np.ndarray, n: np.ndarray, axis: int):
    """Inverse of `_analysis_step` (the 2 x 2 steps are symmetric orthogonal: self-inverse)."""
    approx, detail = np.moveaxis(approx, axis, 0), np.moveaxis(detail, axis, 0)
    c, s, _ = _pair_weights(n)
    shape = (-1,) + (1,) * (approx.ndim - 1)
    c, s = c.reshape(shape), s.reshape(shape)
    k = len(detail)
    out = np.empty((len(n),) + approx.shape[1:])
    out[0:2 * k:2] = c * approx[:k] + s * detail
    out[1:2 * k:2] = s * approx[:k] - c * detail
    if len(n) % 2:
        out[-1] = approx[-1]
    return np.moveaxis(out, 0, axis)


def max_level(shape) -> int:
    """pywt's default depth for Haar: floor(log2(min side)) (at least 1)."""
    return max(1, pywt.dwtn_max_level(shape, "haar"))


def unbalanced_haar2(Z: np.ndarray, levels: int) -> list:
    """pywt.wavedec2-shaped list [cA_L, (cH_L, cV_L, cD_L), ..., (cH_1, cV_1, cD_1)].

    Horizontal = detail along axis 0 (rows) and approximation along axis 1, as in pywt.
    """
    a = np.asarray(Z, dtype=np.float64)
    n0, n1 = np.ones(a.shape[0]), np.ones(a.shape[1])
    details = []
    for _ in range(levels):
        lo, hi, m0 = _analysis_step(a, n0, axis=0)
        aa, ad, m1 = _analysis_step(lo, n1, axis=1)
        da, dd, _ = _analysis_step(hi, n1, axis=1)
        details.append((da, ad, dd))
        a, n0, n1 = aa, m0, m1
    return [a] + details[::-1]


def inverse_unbalanced_haar2(coeffs: list, shape) -> np.ndarray:
    """Rebuild the grid from `unbalanced_haar2` coefficients (perfect reconstruction)."""
    sizes = [(np.ones(shape[0]), np.ones(shape[1]))]
    for _ in range(len(coeffs) - 1):
        n0, n1 = sizes[-1]
        sizes.append((_pair_weights(n0)[2], _pair_weights(n1)[2]))
    a = coeffs[0]
    for (da, ad, dd), (n0, n1) in zip(coeffs[1:], sizes[-2::-1]):
        lo = _synthesis_step(a, ad, n1, axis=1)
        hi = _synthesis_step(da, dd, n1, axis=1)
        a = _synthesis_step(lo, hi, n0, axis=0)
    return a


# ----------------------------------------------------------------------------- public API
def _as_grid(Z) -> np.ndarray:
    Z = np.asarray(Z, dtype=float)
    if Z.ndim != 2 or min(Z.shape) < 2:
        raise ConfigError(f"a surface grid must be 2-D with at least 2 points per side, got "
                          f"shape {Z.shape}")
    if not np.isfinite(Z).all():
        raise ConfigError("surface grid has non-finite values; wavelets need a finite grid")
    return Z


def _check_wavelet(wavelet: str) -> None:
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ConfigError(f"unknown discrete wavelet '{wavelet}'; e.g. haar, db2, sym4, coif1")
    if not pywt.Wavelet(wavelet).orthogonal:
        raise ConfigError(f"wavelet '{wavelet}' is not orthogonal: its coefficients do not "
                          "partition the grid's energy; use haar, dbN, symN or coifN")


def resolve_mode(shape, wavelet: str, levels: int) -> str:
    """The exact scheme for this grid (see the module doc); raises for non-orthogonal wavelets."""
    _check_wavelet(wavelet)
    if wavelet == "haar":
        return UNBALANCED
    dyadic = all(side % 2 ** levels == 0 for side in shape)
    return "periodization" if dyadic else "zero"


def coefficients(Z, wavelet: str = "haar", levels: int | None = None):
    """(mode, pywt-shaped coefficient list) of the exact scheme."""
    Z = _as_grid(Z)
    _check_wavelet(wavelet)
    top = max_level(Z.shape) if wavelet == "haar" else \
        max(1, pywt.dwtn_max_level(Z.shape, wavelet))
    levels = top if levels is None else int(levels)
    if not 1 <= levels <= top:
        raise ConfigError(f"levels must be between 1 and {top} for a {Z.shape} grid and "
                          f"wavelet '{wavelet}', got {levels}")
    mode = resolve_mode(Z.shape, wavelet, levels)
    if mode == UNBALANCED:
        return mode, unbalanced_haar2(Z, levels)
    return mode, pywt.wavedec2(Z, wavelet, mode=mode, level=levels)


def _labelled(coeffs):
    levels = len(coeffs) - 1
    yield levels, "approx", coeffs[0]
    for offset, details in enumerate(coeffs[1:]):
        for kind, array in zip(DETAIL_KINDS, details):
            yield levels - offset, kind, array


def wavelet_energy(Z, wavelet: str = "haar", levels: int | None = None) -> pd.DataFrame:
    """Energy (sum of squared coefficients) per (level, kind); they sum to sum(Z**2) exactly.

    Columns level, kind, energy, share (energy / grid energy), mode (the scheme used).
    """
    mode, coeffs = coefficients(Z, wavelet, levels)
    total = float(np.sum(np.asarray(Z, float) ** 2))
    rows = [{"level": lv, "kind": kind, "energy": float(np.sum(np.square(a)))}
            for lv, kind, a in _labelled(coeffs)]
    df = pd.DataFrame(rows, columns=["level", "kind", "energy"])
    df["share"] = df["energy"] / total if total > 0 else np.nan
    df["mode"] = mode
    return df


def wavelet_decomposition(Z, wavelet: str = "haar", levels: int | None = None) -> pd.DataFrame:
    """All coefficients as rows (level, kind, i, j, coefficient, mode).

    (i, j) index the coefficient array of that level and kind. Rebuild the grid with
    ``inverse_unbalanced_haar2(coefficients_to_pywt(rows), Z.shape)`` for mode
    "unbalanced-haar", else ``pywt.waverec2(coefficients_to_pywt(rows), wavelet, mode=mode)``.
    """
    mode, coeffs = coefficients(Z, wavelet, levels)
    frames = []
    for lv, kind, a in _labelled(coeffs):
        i, j = np.indices(a.shape)
        frames.append(pd.DataFrame({"level": lv, "kind": kind, "i": i.ravel(), "j": j.ravel(),
                                    "coefficient": a.ravel()}))
    return pd.concat(frames, ignore_index=True).assign(mode=mode)


def coefficients_to_pywt(decomposition: pd.DataFrame) -> list:
    """Rebuild pywt's coefficient list from `wavelet_decomposition` rows."""
    def array(level, kind):
        part = decomposition[(decomposition.level == level) & (decomposition.kind == kind)]
        shape = (part.i.max() + 1, part.j.max() + 1)
        out = np.empty(shape)
        out[part.i.to_numpy(), part.j.to_numpy()] = part.coefficient.to_numpy()
        return out

    top = int(decomposition.loc[decomposition.kind == "approx", "level"].iloc[0])
    return [array(top, "approx")] + [tuple(array(level, kind) for kind in DETAIL_KINDS)
                                     for level in range(top, 0, -1)]
