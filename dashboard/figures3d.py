"""Loss surfaces side by side: Altair heat maps (the default view, and the PNG and SVG
downloads: Plotly's static export needs a browser, vl-convert does not) and, on request, Plotly
3-D surfaces or contours; optimizer paths over contours.

A browser draws every Plotly figure on the page, and loading Plotly's script alone costs it
about a second: pages draw Plotly figures only when asked.
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from landscape_lib.analyses.grid_stats.gaussfit import gaussian

from .charts import TITLE, chart_safe


def grid_of(points: pd.DataFrame, value: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, Z) from surface points (x, y, value) with Z[row, col] at (ys[row], xs[col]),
    the layout Plotly expects. Built from the coordinates, not the (i, j) indices, so it does not
    depend on which index runs along which axis."""
    Z = points.pivot_table(index="y", columns="x", values=value, aggfunc="first", dropna=False)
    Z = Z.sort_index().sort_index(axis=1)
    return Z.columns.to_numpy(float), Z.index.to_numpy(float), Z.to_numpy(dtype=float)


def _range(Z: np.ndarray) -> tuple[float, float]:
    v = Z[np.isfinite(Z)]
    return (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)


def _right_edge(fig, kind: str, col: int) -> float:
    """The right edge (paper coordinates) of subplot `col`, where its colour bar goes."""
    suffix = "" if col == 1 else str(col)
    if kind == "surface":
        return fig.layout[f"scene{suffix}"].domain.x[1]
    return fig.layout[f"xaxis{suffix}"].domain[1]


def surfaces_figure(grids: list[dict], *, kind: str = "surface", z_title: str = "loss",
                    log_z: bool = False, shared: bool = True, colorscale: str = "Viridis"):
    """Side-by-side 3-D surfaces or contour maps. Each grid: {title, xs, ys, Z, x_title,
    y_title, centre}. `shared`: one colour scale and z range for all panels, else one per panel.
    The centre (the checkpoint itself, at (0, 0)) is marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    def z_of(Z):
        return np.log10(np.where(Z > 0, Z, np.nan)) if log_z else Z

    spec = {"type": "surface"} if kind == "surface" else {"type": "xy"}
    n = len(grids)
    fig = make_subplots(rows=1, cols=n, specs=[[spec] * n],
                        subplot_titles=[g["title"] for g in grids],
                        horizontal_spacing=0.04 if shared else 0.12)
    title = f"log10 {z_title}" if log_z else z_title
    ranges = [_range(z_of(g["Z"])) for g in grids]
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    for col, (g, (glo, ghi)) in enumerate(zip(grids, ranges), start=1):
        z = z_of(g["Z"])
        cmin, cmax = (lo, hi) if shared else (glo, ghi)
        common = dict(x=g["xs"], y=g["ys"], z=z, colorscale=colorscale,
                      showscale=not shared or col == n,
                      colorbar=dict(title=title, x=_right_edge(fig, kind, col) + 0.005,
                                    xanchor="left", len=0.8, thickness=10))
        if kind == "surface":
            fig.add_trace(go.Surface(**common, cmin=cmin, cmax=cmax), row=1, col=col)
            cz = g["centre"]
            cz = np.log10(cz) if log_z and cz and cz > 0 else cz
            fig.add_trace(go.Scatter3d(x=[0.0], y=[0.0], z=[cz], mode="markers",
                                       marker=dict(size=5, color="red"), name="centre",
                                       showlegend=False), row=1, col=col)
            scene = "scene" if col == 1 else f"scene{col}"
            fig.update_layout({scene: dict(
                xaxis_title=g["x_title"], yaxis_title=g["y_title"], aspectmode="cube",
                zaxis=dict(title=title, range=[cmin, cmax]))})
        else:
            fig.add_trace(go.Contour(**common, zmin=cmin, zmax=cmax, ncontours=25,
                                     contours=dict(showlines=True)), row=1, col=col)
            fig.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", showlegend=False,
                                     marker=dict(symbol="x", size=10, color="red"),
                                     name="centre"), row=1, col=col)
            fig.update_xaxes(title_text=g["x_title"], row=1, col=col)
            same = col > 1 and g["y_title"] == grids[0]["y_title"]  # said once, at the left
            fig.update_yaxes(title_text=None if same else g["y_title"], row=1, col=col)
    fig.update_layout(height=480, margin=dict(l=0, r=0, t=60, b=0))
    fig.update_annotations(font_size=12)
    return fig


# Heat-map panels: the main column is about WIDTH px wide in a 1,500 px window; a panel's y axis
# (ticks and title) and a colour legend take about AXIS and LEGEND px beside its square.
PANELS_PER_ROW, WIDTH, AXIS, LEGEND = 3, 1000, 70, 75


def surfaces_heatmap(points: pd.DataFrame, value: str, panels: dict, shared: bool = True,
                     log_z: bool = False) -> alt.TopLevelMixin:
    """Heat maps of 2-D surfaces side by side, drawn by Vega (the Surfaces page's default view,
    light for the browser, and the PNG/SVG downloads of every surface view). `panels`:
    {analysis_id: {"title": [lines], "x_title": ..., "y_title": ...}} in panel order. `shared`:
    one colour scale for all panels (one legend), else one per panel. The centre (the
    checkpoint itself, the grid point nearest (0, 0)) is marked with a red cross. At most
    PANELS_PER_ROW panels a row, each sized so that a row with its axes and legends fits the
    page's width (WIDTH)."""
    df = chart_safe(points[["analysis_id", "x", "y", value]])
    if log_z:
        df = df.assign(**{value: np.log10(df[value].where(df[value] > 0))})
    title = f"log10 {value}" if log_z else value
    finite = df[value].dropna()
    domain = {"domain": [float(finite.min()), float(finite.max())]} if shared and len(
        finite) else {}
    cols = max(1, min(PANELS_PER_ROW, len(panels)))
    legends = 0 if shared else cols  # one legend per panel, else one for the chart
    side = max(140, min(300, (WIDTH - cols * AXIS - (legends or 1) * LEGEND) // cols))
    axis = {"format": ".2f", "labelOverlap": True}
    cells = []
    for aid, panel in panels.items():
        d = df[df["analysis_id"] == aid]
        if d.empty:
            continue
        x = alt.X("x:O", axis=alt.Axis(**axis), title=panel["x_title"])
        y = alt.Y("y:O", sort="descending", axis=alt.Axis(**axis), title=panel["y_title"])
        rect = alt.Chart(d).mark_rect().encode(
            x=x, y=y, tooltip=["x", "y", value],
            color=alt.Color(f"{value}:Q", title=title,
                            scale=alt.Scale(scheme="viridis", **domain)))
        centre = d.loc[[(d["x"].abs() + d["y"].abs()).idxmin()]]
        mark = alt.Chart(centre).mark_point(shape="cross", color="red", size=150,
                                            filled=True).encode(x=x, y=y)
        cells.append((rect + mark).properties(
            width=side, height=side, title=alt.TitleParams(panel["title"], fontSize=11)))
    mode = "shared" if shared else "independent"
    chart = alt.vconcat(*(alt.hconcat(*cells[i:i + cols]).resolve_scale(color=mode)
                          for i in range(0, len(cells), cols))).resolve_scale(color=mode)
    return chart.properties(title=alt.TitleParams(
        f"{title} around each checkpoint ({'shared' if shared else 'per-panel'} scale)",
        **TITLE))


def paths_figure(background: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 paths: pd.DataFrame, title: str):
    """Optimizer paths (x, y per step, one line per optimizer) over a contour map."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    fig = go.Figure()
    if background is not None:
        xs, ys, Z = background
        fig.add_trace(go.Contour(x=xs, y=ys, z=Z, colorscale="Viridis", ncontours=30,
                                 opacity=0.85, showscale=True, name="surface"))
    for k, (optimizer, path) in enumerate(paths.groupby("optimizer", sort=True)):
        color = qualitative.D3[k % len(qualitative.D3)]
        fig.add_trace(go.Scatter(x=path["x"], y=path["y"], mode="lines+markers", name=optimizer,
                                 marker=dict(size=4, color=color),
                                 line=dict(width=2, color=color)))
    fig.update_layout(title=title, height=420, margin=dict(l=0, r=0, t=40, b=0),
                      legend=dict(orientation="h"), xaxis_title="x", yaxis_title="y")
    return fig


def paths_static(paths: pd.DataFrame, title: str) -> alt.TopLevelMixin:
    """The paths as an Altair line chart (PNG/SVG downloads)."""
    return alt.Chart(chart_safe(paths)).mark_line(point=True).encode(
        x="x:Q", y="y:Q", color="optimizer:N", order="step:Q",
    ).properties(title=alt.TitleParams(title, **TITLE), width=420, height=360)


def gaussian_grid(fit: pd.Series, xlim: tuple[float, float], ylim: tuple[float, float],
                  n: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The library's fitted Gaussian surface on an n x n grid, Z[row, col] at (ys[row], xs[col])."""
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    return xs, ys, gaussian(X, Y, fit["A"], fit["x0"], fit["y0"], fit["s1"], fit["s2"],
                            fit["offset"])
