"""Chart builders and the one way the pages show a table or a chart: with a CSV download of
exactly the DataFrame behind it.

Altair draws lines, scatters and heat maps; Plotly draws 3-D surfaces and contours.
"""
from __future__ import annotations

import re

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

ALTAIR_MAX_ROWS = 5000


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "data"


def chart_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Infinities become missing values (Vega-Lite cannot draw them; JSON cannot hold them)."""
    num = df.select_dtypes("number").columns
    if len(num) and np.isinf(df[num].to_numpy(dtype=float, na_value=np.nan)).any():
        df = df.copy()
        df[num] = df[num].replace([np.inf, -np.inf], np.nan)
    return df


def download_csv(df: pd.DataFrame, name: str, key: str | None = None) -> None:
    """A download button for `df` as CSV; the CSV is made only when clicked."""
    st.download_button(
        "Download CSV", data=lambda: df.to_csv(index=False), file_name=f"{_slug(name)}.csv",
        mime="text/csv", key=key or f"csv_{_slug(name)}", icon=":material/download:",
        on_click="ignore")


def table(df: pd.DataFrame, name: str, key: str | None = None, **kwargs) -> None:
    """st.dataframe of `df` with its CSV download."""
    st.dataframe(df, hide_index=True, **kwargs)
    download_csv(df, name, key)


def altair(chart: alt.TopLevelMixin, df: pd.DataFrame, name: str, key: str | None = None) -> None:
    """An Altair chart built on `df`, with `df` as CSV."""
    st.altair_chart(chart, width="stretch")
    download_csv(df, name, key)


def plotly(fig, df: pd.DataFrame, name: str, key: str | None = None) -> None:
    """A Plotly figure drawn from `df`, with `df` as CSV."""
    st.plotly_chart(fig, width="stretch", key=f"plot_{key or _slug(name)}")
    download_csv(df, name, key)


def thin(df: pd.DataFrame, max_rows: int = ALTAIR_MAX_ROWS) -> pd.DataFrame:
    """Every k-th row when there are too many for Altair (queries thin first; this is a guard)."""
    if len(df) <= max_rows:
        return df
    return df.iloc[:: int(np.ceil(len(df) / max_rows))]


# ----------------------------------------------------------------------------- builders
def lines(df: pd.DataFrame, x: str, y: str, color: str, *, log_y: bool = False,
          band: tuple[str, str] | None = None, title: str = "", y_title: str | None = None,
          x_title: str | None = None, detail: str | None = None, points: bool = False,
          height: int = 280, log_x: bool = False) -> alt.Chart:
    """Lines of y against x, one per `color` value, with an optional shaded band (lo, hi)."""
    df = chart_safe(df)
    if log_y:  # a log axis cannot show values <= 0
        df = df[df[y] > 0]
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    x_scale = alt.Scale(type="log") if log_x else alt.Scale(zero=False)
    base = alt.Chart(df).encode(x=alt.X(x, title=x_title or x, scale=x_scale),
                                color=color_channel(color))
    layers = []
    if band:
        lo, hi = band
        layers.append(base.mark_area(opacity=0.2).encode(y=alt.Y(lo, scale=y_scale),
                                                         y2=alt.Y2(hi)))
    enc = dict(y=alt.Y(y, title=y_title or y, scale=y_scale),
               tooltip=[c for c in df.columns if c not in (band or ())][:8])
    if detail:
        enc["detail"] = detail
    layers.append(base.mark_line(point=points).encode(**enc))
    return alt.layer(*layers).properties(
        title=title, height=height + _legend_height(df, color)).interactive()


def color_channel(field: str, symbol: str = "stroke") -> alt.Color:
    """A colour channel with a distinct categorical palette and a legend below the plot."""
    return alt.Color(field, title=field.split(":")[0], scale=alt.Scale(scheme="tableau10"),
                     legend=alt.Legend(orient="bottom", columns=1, labelLimit=600,
                                       symbolOpacity=1, symbolType=symbol))


def _legend_height(df: pd.DataFrame, field: str) -> int:
    # Streamlit sizes charts to fit, legend included: grow by the legend's rows.
    field = field.split(":")[0]
    return 20 * min(int(df[field].nunique()), 20) + 30 if field in df else 0


def scatter(df: pd.DataFrame, x: str, y: str, color: str, *, log_x: bool = False,
            log_y: bool = False, title: str = "", tooltip: list[str] | None = None,
            height: int = 300) -> alt.Chart:
    df = chart_safe(df)
    return alt.Chart(df).mark_circle(size=60, opacity=0.8).encode(
        x=alt.X(x, scale=alt.Scale(type="log" if log_x else "linear", zero=False)),
        y=alt.Y(y, scale=alt.Scale(type="log" if log_y else "linear", zero=False)),
        color=color_channel(color, "circle"), tooltip=tooltip or list(df.columns[:8]),
    ).properties(title=title, height=height + _legend_height(df, color)).interactive()


def heatmap(df: pd.DataFrame, x: str, y: str, value: str, *, title: str = "",
            domain: tuple[float, float] | None = None, height: int = 220,
            scheme: str = "viridis") -> alt.Chart:
    """Rectangles on a discrete x/y grid coloured by `value` (a shared `domain` keeps several
    heat maps comparable)."""
    scale = alt.Scale(scheme=scheme, domain=list(domain)) if domain else alt.Scale(scheme=scheme)
    return alt.Chart(chart_safe(df)).mark_rect().encode(
        x=alt.X(f"{x}:O"), y=alt.Y(f"{y}:O"),
        color=alt.Color(f"{value}:Q", scale=scale), tooltip=[x, y, value],
    ).properties(title=title, height=height)


def bars(df: pd.DataFrame, x: str, y: str, color: str, *, title: str = "",
         offset: str | None = None, log_x: bool = False, height: int = 280) -> alt.Chart:
    """Horizontal bars of x per y category, grouped by `offset` within a category."""
    df = chart_safe(df)
    if log_x:
        df = df[df[x] > 0]
    enc = dict(x=alt.X(x, scale=alt.Scale(type="log" if log_x else "linear")),
               y=alt.Y(f"{y}:N", sort=None), color=color_channel(color, "square"),
               tooltip=list(df.columns[:8]))
    if offset:
        enc["yOffset"] = alt.YOffset(f"{offset}:N")
    return alt.Chart(df).mark_bar().encode(**enc).properties(
        title=title, height=height + _legend_height(df, color))


def ecdf(df: pd.DataFrame, value: str, color: str, *, title: str = "") -> alt.Chart:
    """Empirical cumulative distribution of `value` per `color` group (steeper = more robust)."""
    return alt.Chart(chart_safe(df)).transform_window(
        cumulative_count="count()", sort=[{"field": value}], groupby=[color],
    ).transform_joinaggregate(total="count()", groupby=[color]).transform_calculate(
        fraction="datum.cumulative_count / datum.total",
    ).mark_line(interpolate="step-after").encode(
        x=alt.X(f"{value}:Q"), y=alt.Y("fraction:Q", title="fraction of runs"),
        color=color_channel(f"{color}:N"),
    ).properties(title=title, height=300 + _legend_height(df, color))


# ----------------------------------------------------------------------------- Plotly
def grid_of(points: pd.DataFrame, value: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, Z) from surface points (x, y, value) with Z[row, col] at (ys[row], xs[col]),
    the layout Plotly expects. Built from the coordinates, not the (i, j) indices, so it does not
    depend on which index runs along which axis."""
    Z = points.pivot_table(index="y", columns="x", values=value, aggfunc="first", dropna=False)
    Z = Z.sort_index().sort_index(axis=1)
    return Z.columns.to_numpy(float), Z.index.to_numpy(float), Z.to_numpy(dtype=float)


def surfaces_figure(grids: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], *,
                    kind: str = "surface", z_title: str = "loss", log_z: bool = False,
                    colorscale: str = "Viridis"):
    """Side-by-side 3-D surfaces or contour maps on ONE colour scale and z range."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    finite = [Z[np.isfinite(Z)] for *_, Z in grids]
    values = np.concatenate(finite) if finite else np.array([0.0])
    if log_z:
        values = np.log10(values[values > 0]) if (values > 0).any() else np.array([0.0])
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    spec = {"type": "surface"} if kind == "surface" else {"type": "xy"}
    fig = make_subplots(rows=1, cols=len(grids), specs=[[spec] * len(grids)],
                        subplot_titles=[g[0] for g in grids], horizontal_spacing=0.03)
    for col, (_, xs, ys, Z) in enumerate(grids, start=1):
        z = np.log10(np.where(Z > 0, Z, np.nan)) if log_z else Z
        if kind == "surface":
            trace = go.Surface(x=xs, y=ys, z=z, coloraxis="coloraxis")
        else:
            trace = go.Contour(x=xs, y=ys, z=z, coloraxis="coloraxis", ncontours=25,
                               contours=dict(showlines=True))
        fig.add_trace(trace, row=1, col=col)
    title = f"log10 {z_title}" if log_z else z_title
    fig.update_layout(coloraxis=dict(colorscale=colorscale, cmin=lo, cmax=hi,
                                     colorbar=dict(title=title)),
                      height=480, margin=dict(l=0, r=0, t=60, b=0))
    fig.update_annotations(font_size=12)
    if kind == "surface":
        fig.update_scenes(zaxis=dict(range=[lo, hi], title=title), xaxis_title="x",
                          yaxis_title="y", aspectmode="cube")
    return fig


def paths_figure(background: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 paths: pd.DataFrame, title: str):
    """Optimizer paths (x, y per step, one line per optimizer) over a contour map."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if background is not None:
        xs, ys, Z = background
        fig.add_trace(go.Contour(x=xs, y=ys, z=Z, colorscale="Viridis", ncontours=30,
                                 opacity=0.85, showscale=True, name="surface"))
    from plotly.colors import qualitative
    for k, (optimizer, path) in enumerate(paths.groupby("optimizer", sort=True)):
        color = qualitative.D3[k % len(qualitative.D3)]
        fig.add_trace(go.Scatter(x=path["x"], y=path["y"], mode="lines+markers", name=optimizer,
                                 marker=dict(size=4, color=color),
                                 line=dict(width=2, color=color)))
    fig.update_layout(title=title, height=420, margin=dict(l=0, r=0, t=40, b=0),
                      legend=dict(orientation="h"), xaxis_title="x", yaxis_title="y")
    return fig


def gaussian_grid(fit: pd.Series, xlim: tuple[float, float], ylim: tuple[float, float],
                  n: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted surface z = A exp(-((x-x0)^2/(2 s1^2) + (y-y0)^2/(2 s2^2))) + offset (SEEDS E.6)
    on an n x n grid, Z[row, col] at (ys[row], xs[col]). Evaluated here with numpy rather than
    through landscape_lib.analyses.gaussfit, whose import pulls in torch (seconds per page)."""
    xs, ys = np.linspace(*xlim, n), np.linspace(*ylim, n)
    X, Y = np.meshgrid(xs, ys)
    Z = fit["A"] * np.exp(-((X - fit["x0"]) ** 2 / (2 * fit["s1"] ** 2)
                            + (Y - fit["y0"]) ** 2 / (2 * fit["s2"] ** 2))) + fit["offset"]
    return xs, ys, Z


def diagonal_rule(df: pd.DataFrame, x: str, y: str) -> alt.Chart:
    """The line y = x over the range of both columns (persistence diagrams)."""
    values = pd.concat([df[x], df[y]]).replace([np.inf, -np.inf], np.nan).dropna()
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    return alt.Chart(pd.DataFrame({x: [lo, hi], y: [lo, hi]})).mark_line(
        color="gray", strokeDash=[4, 4]).encode(x=x, y=y)
