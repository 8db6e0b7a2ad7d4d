"""A study report: for each factor a study varies, its effect on accuracy and sharpness (means,
95% intervals over seeds, paired tests where configurations match), as tables, figures and one
self-contained Markdown or HTML file (figures inline: PNG for Markdown, SVG for HTML)."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import altair as alt
import pandas as pd

from dashboard import charts, stats
from dashboard.data import curvature
from dashboard.data import factors as factors_data
from dashboard.data.runs import LABELS, distinct_keys, varying_keys

MEASURES = curvature.MEASURES


@dataclass
class Section:
    factor: str
    levels: pd.DataFrame          # level, measure, centre, lo, hi, n
    paired: pd.DataFrame          # factors.paired_table output
    baseline: str
    match: list = field(default_factory=list)

    def figure(self) -> alt.TopLevelMixin:
        df = self.levels[self.levels["measure"].isin(["final_val_acc", "top_eig"])].copy()
        df["measure"] = df["measure"].map(lambda m: MEASURES[m][0])
        base = alt.Chart(charts.chart_safe(df)).encode(
            y=alt.Y("level:N", title=LABELS[self.factor], sort=None))
        rule = base.mark_rule(strokeWidth=2).encode(x=alt.X("lo:Q", title=None), x2="hi:Q")
        dot = base.mark_point(filled=True, size=70).encode(
            x=alt.X("centre:Q", scale=alt.Scale(zero=False)), tooltip=list(df.columns))
        return (rule + dot).properties(width=260, height=24 * df["level"].nunique() + 20).facet(
            column=alt.Column("measure:N", title=None)).resolve_scale(x="independent").properties(
            title=alt.TitleParams(f"{LABELS[self.factor]}: means and 95% CIs over seeds",
                                  **charts.TITLE))


def factors(measures: pd.DataFrame) -> dict[str, str]:
    """{factor: its baseline level} for each config key other than the seed and the study that
    varies among the runs (cheap: no section is built)."""
    out = {}
    for factor in distinct_keys(measures, varying_keys(measures, exclude=("seed", "study"))):
        levels = sorted(measures[factor].astype(str).unique())
        if len(levels) >= 2:
            out[factor] = str(levels[0])
    return out


def section(measures: pd.DataFrame, factor: str, baseline: str) -> Section:
    """The section of one factor: its levels' means and intervals, and the paired table."""
    rows = []
    for level, group in measures.groupby(measures[factor].astype(str), sort=True):
        for m, (_, kind) in MEASURES.items():
            rows.append({"level": level, "measure": m, **stats.summarize(group[m], kind)})
    match = factors_data.match_keys(measures, factor)
    table = factors_data.paired_table(measures.assign(**{factor: measures[factor].astype(str)}),
                                      factor, baseline, match,
                                      {m: k for m, (_, k) in MEASURES.items()})
    return Section(factor, pd.DataFrame(rows), table, baseline, match)


def build(measures: pd.DataFrame) -> list[Section]:
    """One section per factor that varies among the runs (see factors())."""
    return [section(measures, f, b) for f, b in factors(measures).items()]


def _fmt(v) -> str:
    return "–" if v is None or v != v else f"{v:.4g}"


def _levels_md(s: Section) -> str:
    lines = ["| level | measure | n | centre | 95% CI |", "|---|---|---|---|---|"]
    for r in s.levels.itertuples():
        lines.append(f"| {r.level} | {MEASURES[r.measure][0]} | {r.n} | {_fmt(r.centre)} | "
                     f"[{_fmt(r.lo)}, {_fmt(r.hi)}] |")
    return "\n".join(lines)


def _paired_md(s: Section) -> str:
    if s.paired.empty:
        return "_No configuration has runs at the baseline and another level._"
    lines = ["| configuration | level | measure | effect | estimate | 95% CI | p | pairs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in s.paired.to_dict("records"):
        lines.append(f"| {r['configuration']} | {r[s.factor]} | {MEASURES[r['quantity']][0]} | "
                     f"{r['effect']} | {_fmt(r['estimate'])} | [{_fmt(r['lo'])}, "
                     f"{_fmt(r['hi'])}] | {_fmt(r['p_value'])} | "
                     f"{r['n_b'] if r['paired'] else 'unpaired'} |")
    return "\n".join(lines)


def intro(study: str, measures: pd.DataFrame) -> str:
    return (f"Study **{study}**: {len(measures)} runs. Centres are means (geometric means for "
            "positive quantities: losses, lambda_max, traces, surface statistics), intervals "
            "are 95% Student-t intervals over the runs of a level (over seeds where the other "
            "keys are fixed). Paired comparisons: each level against the baseline within "
            "configurations equal in every other varying key; seeds present at both levels "
            "are paired (paired t-test), otherwise Welch's test. Sharpness is at each run's "
            "last analysed epoch; surface statistics are averaged over direction seeds.")


def markdown(study: str, measures: pd.DataFrame, sections: list[Section]) -> str:
    parts = [f"# Study report: {study}", intro(study, measures)]
    for s in sections:
        png = base64.b64encode(charts.to_png(s.figure())).decode()
        parts += [f"## {LABELS[s.factor]} (baseline: {s.baseline})", _levels_md(s),
                  f"![{s.factor}](data:image/png;base64,{png})",
                  "### Paired comparison", _paired_md(s)]
    return "\n\n".join(parts) + "\n"


def to_html(study: str, measures: pd.DataFrame, sections: list[Section]) -> str:
    body = [f"<h1>Study report: {html.escape(study)}</h1>",
            f"<p>{html.escape(intro(study, measures)).replace('**', '')}</p>"]
    for s in sections:
        body += [f"<h2>{html.escape(LABELS[s.factor])} (baseline: {html.escape(s.baseline)})"
                 "</h2>", s.levels.to_html(index=False, float_format="%.4g"),
                 charts.to_svg(s.figure()), "<h3>Paired comparison</h3>",
                 s.paired.to_html(index=False, float_format="%.4g") if not s.paired.empty
                 else "<p>No configuration has runs at the baseline and another level.</p>"]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
             "padding:2px 6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Study report: "
            f"{html.escape(study)}</title><style>{style}</style></head><body>"
            + "\n".join(body) + "</body></html>")
