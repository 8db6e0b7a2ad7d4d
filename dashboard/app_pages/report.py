"""Study report: each factor a study varies, with its effect on accuracy and sharpness (means,
95% intervals over seeds, paired tests where configurations match), downloadable as one
Markdown or HTML file with its figures."""
import streamlit as st

from dashboard import charts, report
from dashboard.data import core, curvature
from dashboard.data import runs as runs_data

root, filters, _ = core.context()
st.title("Study report")
all_runs = runs_data.runs(root, core.Filters())
counts = all_runs["study"].dropna().value_counts()
studies = sorted((s for s in counts.index if s), key=lambda s: (-counts[s], s))  # largest first
if not studies:
    st.info("No run belongs to a study (grid files name them: [[study]] name = ...).")
    st.stop()
default = [s for s in filters.studies if s in studies]
study = st.selectbox("Study", studies, key="report_study", bind="query-params",
                     index=studies.index(default[0]) if default else 0)


@core.by_version(*curvature.MEASURE_TABLES)
def study_section(root: str, study: str, factor: str, baseline: str) -> report.Section:
    """One factor's section, made again only when a table of the measures changes: at 10,000
    runs a section takes a few tenths of a second to build."""
    measures = curvature.run_measures(root, core.Filters(studies=(study,)))
    return report.section(measures, factor, baseline)


measures = curvature.run_measures(root, core.Filters(studies=(study,)))
baselines = report.factors(measures)
st.markdown(report.intro(study, measures))
if not baselines:
    st.info(f"Study {study} varies no factor besides the seed.")
    st.stop()


def every_section() -> list[report.Section]:
    return [study_section(root, study, f, b) for f, b in baselines.items()]


with st.container(horizontal=True, gap="small"):
    st.download_button("Markdown report",
                       data=lambda: report.markdown(study, measures, every_section()),
                       file_name=f"report_{charts.slug(study)}.md", mime="text/markdown",
                       key="report_md", icon=":material/description:", on_click="ignore")
    st.download_button("HTML report", data=lambda: report.to_html(study, measures, every_section()),
                       file_name=f"report_{charts.slug(study)}.html", mime="text/html",
                       key="report_html", icon=":material/html:", on_click="ignore")
# One factor's section at a time, built when first shown (the browser draws its chart and tables
# only); the Markdown and HTML reports above hold every section.
first = next(iter(baselines))
names = {f: f"{runs_data.LABELS[f]} (baseline: {b})" for f, b in baselines.items()}
factor = st.segmented_control("Factor", list(names), default=first,
                              key="report_factor", bind="query-params",
                              format_func=names.get) or first
s = study_section(root, study, factor, baselines[factor])
st.subheader(names[factor])
levels = s.levels.assign(measure=s.levels["measure"].map(lambda m: report.MEASURES[m][0]))
charts.show(s.figure(), s.levels, f"report_{factor}", key=f"csv_report_{factor}")
charts.table(levels, f"report_levels_{factor}", key=f"csv_report_levels_{factor}")
if s.paired.empty:
    st.caption("No configuration has runs at the baseline and another level.")
else:
    st.caption("Paired comparison against the baseline within configurations equal in "
               + (", ".join(runs_data.LABELS[k] for k in s.match) or "everything") + ".")
    charts.table(s.paired, f"report_paired_{factor}", key=f"csv_report_paired_{factor}")
