"""Optimizers: loss, accuracy, gradient norm and peak memory per epoch and a final table per
optimizer (SEEDS E), and each optimizer at its best learning rate (a fair comparison)."""
import streamlit as st

from dashboard import charts, factor_view
from dashboard.data import learning_rates


def at_best_lr(view: factor_view.View) -> None:
    """Each optimizer at the learning rate (and weight decay) that is best for it in the
    study, and the metric over every rate tried."""
    st.subheader("Each optimizer at its best learning rate")
    if len(view.filters.studies) != 1:
        st.info("Choose one study: the best rate is chosen within a study.")
        return
    study = view.filters.studies[0]
    metric = st.selectbox("Chosen on", learning_rates.METRICS, key="lr_metric",
                          bind="query-params")
    best = learning_rates.best(view.root, study, metric)
    if best.empty:
        st.info(f"No finished runs in study {study}.")
        return
    st.caption("Mean over seeds at each setting; a setting where a seed diverged ranks below "
               "every setting where none did; `at_edge`: the best rate is the smallest or "
               "largest tried, so the range should be widened before trusting the comparison. "
               "Validation accuracy is measured on the test split: choosing and reporting on "
               "it is optimistic, for every optimizer alike.")
    shown = best.assign(lrs_tried=best["lrs_tried"].map(lambda v: ", ".join(f"{x:g}" for x in v)))
    charts.table(shown, f"best_lr_{metric}", key="csv_best_lr", column_config={
        c: st.column_config.NumberColumn(format="%.4g") for c in (metric, "se", "lo", "hi")})
    table = learning_rates.curves(view.root, study, metric)
    table["series"] = table["optimizer"] + " / " + table["model_label"]
    chart = charts.lines(table, "lr", "mean", "series", band=("lo", "hi"), log_x=True,
                         points=True, title=f"{metric} over the rates tried (mean, 95% CI)",
                         y_title=metric, x_title="learning rate")
    charts.show(chart, table, f"lr_sweep_{metric}", key="csv_lr_sweep")


st.title("Optimizers")
st.caption("Per optimizer: centre and 95% interval over the runs of each row. Peak memory is "
           "the largest per-epoch peak (GPU memory on CUDA).")
factor_view.show("optimizer", ["final_val_acc", "final_train_loss", "final_val_loss",
                               "grad_norm", "peak_mem_mb", "wall_time"],
                 ["train_loss", "val_acc", "grad_norm", "peak_mem_mb"],
                 last={"At best learning rate": at_best_lr})
