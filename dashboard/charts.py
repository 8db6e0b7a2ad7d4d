"""Chart builders and the one way the pages show a table or a chart: with downloads of exactly
the DataFrame behind it (CSV) and of the chart itself (PNG and SVG, rendered on the server by
vl-convert, without a browser; made only when the button is clicked).

Altair draws every 2-D chart; Plotly (figures3d.py) only 3-D surfaces and contours, whose static
downloads are the Altair heat maps of the same grids. Series get a colour and a shape (or dash)
each, cycled with coprime periods, so up to 70 series stay distinct; epoch axes are integers;
legends sit below the plot, compact, once per row of charts.
"""
from __future__ import annotations

import re
from typing import Callable

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

# The charts are built by this code, not typed by users: skip Altair's JSON-schema validation
# of every object and spec, which is most of a chart's build time (0.1-0.3 s each).
alt.utils.schemapi.DEBUG_MODE = False

ALTAIR_MAX_ROWS = 5000
COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
          "#ff9da7", "#9c755f", "#79706e"]  # Tableau 10
SHAPES = ["circle", "square", "triangle-up", "diamond", "cross", "triangle-down", "wye"]
DASHES = [[1, 0], [6, 3], [2, 2]]
TITLE = {"anchor": "start", "fontSize": 13, "limit": 560}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "data"


def chart_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Infinities become missing values (Vega-Lite cannot draw them; JSON cannot hold them)."""
    num = df.select_dtypes("number").columns
    if len(num) and np.isinf(df[num].to_numpy(dtype=float, na_value=np.nan)).any():
        df = df.copy()
        df[num] = df[num].replace([np.inf, -np.inf], np.nan)
    return df


def thin(df: pd.DataFrame, max_rows: int = ALTAIR_MAX_ROWS) -> pd.DataFrame:
    """Every k-th row when there are too many for Altair (queries thin first; this is a guard)."""
    if len(df) <= max_rows:
        return df
    return df.iloc[:: int(np.ceil(len(df) / max_rows))]


# ----------------------------------------------------------------------------- exports
def spec(chart: alt.TopLevelMixin) -> dict:
    """The Vega-Lite spec of a chart built here (no schema validation; the queries, not Altair,
    cap the rows)."""
    with alt.data_transformers.disable_max_rows():
        return chart.to_dict(validate=False)


def to_svg(chart: alt.TopLevelMixin) -> str:
    import vl_convert as vlc
    return vlc.vegalite_to_svg(spec(chart))


def to_png(chart: alt.TopLevelMixin, scale: float = 2.0) -> bytes:
    import vl_convert as vlc
    return vlc.vegalite_to_png(spec(chart), scale=scale)


def downloads(df: pd.DataFrame, name: str, key: str | None = None,
              chart: alt.TopLevelMixin | Callable | None = None) -> None:
    """CSV of `df` and, with a chart (or a function making one), its PNG and SVG: buttons in
    one row; each file is made only when its button is clicked."""
    key = key or f"csv_{slug(name)}"
    get = chart if callable(chart) and not isinstance(chart, alt.TopLevelMixin) else (
        lambda: chart)
    with st.container(horizontal=True, gap="small"):
        st.download_button("CSV", data=lambda: df.to_csv(index=False),
                           file_name=f"{slug(name)}.csv", mime="text/csv", key=key,
                           icon=":material/download:", on_click="ignore")
        if chart is not None:
            st.download_button("PNG", data=lambda: to_png(get()), file_name=f"{slug(name)}.png",
                               mime="image/png", key=f"{key}_png", icon=":material/image:",
                               on_click="ignore")
            st.download_button("SVG", data=lambda: to_svg(get()), file_name=f"{slug(name)}.svg",
                               mime="image/svg+xml", key=f"{key}_svg", icon=":material/draw:",
                               on_click="ignore")


def table(df: pd.DataFrame, name: str, key: str | None = None, **kwargs) -> None:
    """st.dataframe of `df` with its CSV download."""
    st.dataframe(df, hide_index=True, **kwargs)
    downloads(df, name, key)


def show(chart: alt.TopLevelMixin | Callable, df: pd.DataFrame, name: str,
         key: str | None = None, drawn: dict | None = None) -> None:
    """An Altair chart built on `df`, with `df` as CSV and the chart as PNG and SVG. With
    `drawn`, its Vega-Lite spec made beforehand (e.g. cached: building a chart of several
    panels takes a few tenths of a second), `chart` may be a function making the chart, called
    for a PNG or SVG download only."""
    st.vega_lite_chart(spec=drawn or spec(chart), width="stretch")
    downloads(df, name, key, chart)


def plotly(fig, df: pd.DataFrame, name: str, key: str | None = None,
           static: Callable | None = None) -> None:
    """A Plotly figure drawn from `df`, with `df` as CSV and `static()` (an Altair chart of the
    same data) as PNG and SVG."""
    st.plotly_chart(fig, width="stretch", key=f"plot_{key or slug(name)}")
    downloads(df, name, key, static)


# ----------------------------------------------------------------------------- encodings
def _domain(df: pd.DataFrame, field: str) -> list:
    return sorted(df[field].dropna().astype(str).unique().tolist()) if field in df else []


def legend(show_it: bool = True, n: int = 1, longest: int = 12):
    """The compact legend below the plot (None hides it: the row's other chart shows it): as
    many columns as labels of `longest` characters fit in a half-width chart."""
    if not show_it:
        return None
    columns = max(1, min(n, 4, 460 // (7 * longest + 30)))
    return alt.Legend(orient="bottom", columns=columns, labelLimit=460 // columns - 30,
                      symbolLimit=70, title=None)


def series(df: pd.DataFrame, field: str, *, mark: str = "line", show_legend: bool = True
           ) -> dict:
    """Colour plus shape (points) or dash (lines) of a nominal series field."""
    domain = _domain(df, field)
    lg = legend(show_legend, len(domain), max((len(d) for d in domain), default=1))
    enc = {"color": alt.Color(f"{field}:N", scale=alt.Scale(domain=domain, range=COLORS),
                              legend=lg)}
    if mark == "line":
        enc["strokeDash"] = alt.StrokeDash(f"{field}:N", legend=lg,
                                           scale=alt.Scale(domain=domain, range=DASHES))
    else:
        enc["shape"] = alt.Shape(f"{field}:N", legend=lg,
                                 scale=alt.Scale(domain=domain, range=SHAPES))
    return enc


def x_axis(x: str, title: str | None = None, log: bool = False) -> alt.X:
    """An x channel; epochs get integer ticks."""
    if x in ("epoch", "point_epoch", "step", "k", "level"):
        return alt.X(f"{x}:Q", title=title or x, axis=alt.Axis(format="d", tickMinStep=1),
                     scale=alt.Scale(zero=False))
    return alt.X(f"{x}:Q", title=title or x, scale=alt.Scale(type="log" if log else "linear",
                                                             zero=False))


def _legend_height(df: pd.DataFrame, field: str | None, show_legend: bool = True) -> int:
    # Streamlit sizes charts to fit, legend included: grow by the legend's rows.
    if not show_legend or not field or field not in df:
        return 0
    labels = df[field].dropna().astype(str).unique()
    longest = max((len(v) for v in labels), default=1)
    columns = max(1, min(len(labels), 4, 460 // (7 * longest + 30)))
    return 18 * ((min(len(labels), 70) + columns - 1) // columns) + 20


# ----------------------------------------------------------------------------- builders
def lines(df: pd.DataFrame, x: str, y: str, color: str, *, log_y: bool = False,
          band: tuple[str, str] | None = None, title: str = "", y_title: str | None = None,
          x_title: str | None = None, points: bool = False, height: int = 260,
          show_legend: bool = True, log_x: bool = False, single_points: str | None = None
          ) -> alt.TopLevelMixin:
    """Lines of y against x, one per `color` value, with an optional band (lo, hi). Series
    whose `single_points` column is 1 (groups of one run) are drawn as points."""
    df = chart_safe(df)
    if log_y:  # a log axis cannot show values <= 0
        df = df[df[y] > 0]
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
    base = alt.Chart(df).encode(x=x_axis(x, x_title, log_x))
    enc = series(df, color, show_legend=show_legend)
    layers = []
    if band:
        lo, hi = band
        layers.append(base.mark_area(opacity=0.18).encode(
            y=alt.Y(f"{lo}:Q", scale=y_scale), y2=alt.Y2(f"{hi}:Q"), color=enc["color"]))
    tooltip = [c for c in df.columns if not c.startswith("_")][:8]
    layers.append(base.mark_line(point=points).encode(
        y=alt.Y(f"{y}:Q", title=y_title or y, scale=y_scale), tooltip=tooltip, **enc))
    if single_points and single_points in df:
        layers.append(base.transform_filter(f"datum['{single_points}'] == 1").mark_point(
            filled=True, size=40).encode(y=alt.Y(f"{y}:Q", scale=y_scale),
                                         color=enc["color"], tooltip=tooltip))
    return alt.layer(*layers).properties(
        title=alt.TitleParams(title, **TITLE),
        height=height + _legend_height(df, color, show_legend)).interactive(bind_y=False)


def dots(df: pd.DataFrame, x: str, y: str, color: str, *, err: tuple[str, str] | None = None,
         shape: str | None = None, log_x: bool = False, title: str = "",
         x_title: str | None = None, show_legend: bool = True, row_height: int = 22,
         y_labels: bool = True, width: int | None = None) -> alt.TopLevelMixin:
    """A dot chart: one row per `y` category (e.g. a run), the value on x, an optional error
    bar (lo, hi), colour by `color` and shape by `shape` (e.g. a converged flag). Without
    `y_labels`, for a panel right of another on the same rows (see `panels`)."""
    df = chart_safe(df)
    if log_x:
        df = df[df[x] > 0]
    scale = alt.Scale(type="log" if log_x else "linear", zero=False)
    ycat = alt.Y(f"{y}:N", sort=None, title=None,
                 axis=alt.Axis(labelLimit=320) if y_labels else None)
    base = alt.Chart(df).encode(y=ycat)
    layers = []
    if err:
        layers.append(base.mark_rule(strokeWidth=2, opacity=0.6).encode(
            x=alt.X(f"{err[0]}:Q", scale=scale), x2=f"{err[1]}:Q",
            color=series(df, color, mark="point", show_legend=False)["color"]))
    enc = series(df, color, mark="point", show_legend=show_legend)
    if shape:
        enc["shape"] = alt.Shape(f"{shape}:N", legend=legend(show_legend, 3))
    layers.append(base.mark_point(filled=True, size=70).encode(
        x=alt.X(f"{x}:Q", title=x_title or x, scale=scale),
        tooltip=[c for c in df.columns if not c.startswith("_")][:10], **enc))
    return alt.layer(*layers).properties(title=alt.TitleParams(title, **TITLE),
                                         height=alt.Step(row_height),
                                         **({"width": width} if width else {}))


def panels(*rows: list[alt.TopLevelMixin]) -> alt.TopLevelMixin:
    """Rows of charts side by side on the same y categories (e.g. dot charts with runs on y,
    labelled at the left of each row) as ONE chart: the browser draws one view instead of one
    per quantity. Colours, shapes and x scales stay each panel's own."""
    return alt.vconcat(*(alt.hconcat(*row, spacing=12) for row in rows), spacing=24
                       ).resolve_scale(y="shared", x="independent", color="independent",
                                       shape="independent")


def scatter(df: pd.DataFrame, x: str, y: str, color: str, *, shape: str | None = None,
            log_x: bool = False, log_y: bool = False, title: str = "",
            tooltip: list[str] | None = None, height: int = 300, x_title: str | None = None,
            y_title: str | None = None) -> alt.TopLevelMixin:
    """Points of y against x, colour by `color`, shape by `shape` (default: the same field)."""
    df = chart_safe(df)
    enc = series(df, color, mark="point")
    if shape and shape != color:
        enc["shape"] = alt.Shape(f"{shape}:N", legend=legend(True, 3),
                                 scale=alt.Scale(range=SHAPES))
    return alt.Chart(df).mark_point(filled=True, size=70, opacity=0.85).encode(
        x=alt.X(f"{x}:Q", title=x_title or x,
                scale=alt.Scale(type="log" if log_x else "linear", zero=False)),
        y=alt.Y(f"{y}:Q", title=y_title or y,
                scale=alt.Scale(type="log" if log_y else "linear", zero=False)),
        tooltip=tooltip or list(df.columns[:8]), **enc,
    ).properties(title=alt.TitleParams(title, **TITLE),
                 height=height + _legend_height(df, color)).interactive()


def heatmap(df: pd.DataFrame, x: str, y: str, value: str, *, title: str = "",
            domain: tuple[float, float] | None = None, height: int = 220,
            scheme: str = "viridis") -> alt.Chart:
    """Rectangles on a discrete x/y grid coloured by `value` (a shared `domain` keeps several
    heat maps comparable)."""
    scale = alt.Scale(scheme=scheme, domain=list(domain)) if domain else alt.Scale(scheme=scheme)
    return alt.Chart(chart_safe(df)).mark_rect().encode(
        x=alt.X(f"{x}:O"), y=alt.Y(f"{y}:O"),
        color=alt.Color(f"{value}:Q", scale=scale), tooltip=[x, y, value],
    ).properties(title=alt.TitleParams(title, **TITLE), height=height)


def ecdf(df: pd.DataFrame, value: str, color: str, *, title: str = "") -> alt.TopLevelMixin:
    """Empirical cumulative distribution of `value` per `color` group (steeper = more robust);
    every run is also a point, so a group of one run shows."""
    df = chart_safe(df).sort_values([color, value]).copy()
    df["fraction"] = df.groupby(color).cumcount().add(1) / df.groupby(color)[value].transform(
        "size")
    base = alt.Chart(df).encode(x=alt.X(f"{value}:Q"),
                                y=alt.Y("fraction:Q", title="fraction of runs"))
    enc = series(df, color)
    steps = base.mark_line(interpolate="step-after").encode(**enc)
    dots_ = base.mark_point(filled=True, size=45).encode(
        color=enc["color"], tooltip=[c for c in df.columns][:6])
    return (steps + dots_).properties(title=alt.TitleParams(title, **TITLE),
                                      height=280 + _legend_height(df, color))


def diagonal_rule(df: pd.DataFrame, x: str, y: str) -> alt.Chart:
    """The line y = x over the range of both columns (persistence diagrams)."""
    values = pd.concat([df[x], df[y]]).replace([np.inf, -np.inf], np.nan).dropna()
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    return alt.Chart(pd.DataFrame({x: [lo, hi], y: [lo, hi]})).mark_line(
        color="gray", strokeDash=[4, 4]).encode(x=x, y=y)


def parallel(df: pd.DataFrame, axes: list[str], metric: str) -> tuple[alt.Chart, pd.DataFrame]:
    """Parallel coordinates: one line per run through its config keys (`axes`, each scaled to
    [0, 1]: categories in sorted order, numbers linearly or on a log scale when they span more
    than a factor of 10) and the metric, coloured by the metric."""
    rows = []
    for axis in [*axes, metric]:
        values = df[axis]
        num = pd.to_numeric(values, errors="coerce")
        if num.notna().all() and num.nunique() > 1:
            scaled = np.log10(num) if (num > 0).all() and num.max() / num.min() > 10 else num
            pos = (scaled - scaled.min()) / (scaled.max() - scaled.min())
        else:
            order = {v: i for i, v in enumerate(sorted(values.astype(str).unique()))}
            pos = values.astype(str).map(order) / max(len(order) - 1, 1)
        rows.append(pd.DataFrame({"run_id": df["run_id"], "axis": axis, "position": pos,
                                  "value": values.astype(str), metric: df[metric]}))
    long = pd.concat(rows, ignore_index=True)
    chart = alt.Chart(chart_safe(long)).mark_line(opacity=0.6).encode(
        x=alt.X("axis:N", sort=[*axes, metric], title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("position:Q", axis=None), detail="run_id:N",
        color=alt.Color(f"{metric}:Q", scale=alt.Scale(scheme="viridis")),
        tooltip=["run_id", "axis", "value", metric],
    ).properties(height=320, title=alt.TitleParams(f"Config keys to {metric}", **TITLE))
    ticks = alt.Chart(long[long["axis"] != metric].drop_duplicates(["axis", "value"])).mark_text(
        align="left", dx=4, fontSize=10).encode(x=alt.X("axis:N", sort=[*axes, metric]),
                                                y="position:Q", text="value:N")
    return chart + ticks, long
