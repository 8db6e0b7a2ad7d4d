"""Architectures: train loss, validation loss, accuracy and gap per model (SEEDS A), and the
distribution of final error over the runs per model (SEEDS B: steeper = more robust)."""
import streamlit as st

from dashboard import charts, factor_view
from dashboard.data import factors


def error_distribution(view: factor_view.View) -> None:
    st.subheader("Distribution of final error")
    st.caption("Cumulative distribution over the runs of each group (e.g. an lr / weight-decay "
               "sweep): a steeper curve further left means a model that is less sensitive to "
               "its settings. Every run is a point, so a group of one run shows too.")
    errors = factors.run_points(view.root, view.filters, view.keys, "final_error")
    charts.show(charts.ecdf(errors, "final_error", "group"), errors, "final_error_cdf",
                key="csv_final_error_cdf")


st.title("Architectures")
st.caption("Per model (architecture and its options): centre and 95% interval over the runs "
           "of each row.")
factor_view.show(
    "model_label", ["final_train_loss", "final_val_loss", "final_val_acc",
                    "generalization_gap", "wall_time"],
    ["train_loss", "val_loss", "val_acc", "grad_norm"],
    last={"Distribution of final error": error_distribution})
