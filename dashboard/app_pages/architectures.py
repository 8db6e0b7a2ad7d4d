"""Architectures: train loss, validation loss, accuracy and gap per model (SEEDS A), and the
distribution of final error over the filtered runs per model (SEEDS B: steeper = more robust)."""
import streamlit as st

from dashboard import charts, data, factor_view

st.title("Architectures")
st.caption("Per model (architecture and its options), mean ± std over the filtered runs.")
root, filters, _ = factor_view.show(
    "model_label", ["final_train_loss", "final_val_loss", "final_val_acc",
                    "generalization_gap", "wall_time"], ["train_loss", "val_loss", "val_acc",
                                                         "grad_norm"])
st.subheader("Distribution of final error")
st.caption("Cumulative distribution over the filtered runs (e.g. an lr / weight-decay sweep): "
           "a steeper curve further left means a model that is less sensitive to its settings.")
errors = data.final_errors(root, filters, "model_label")
charts.altair(charts.ecdf(errors, "final_error", "model_label"), errors, "final_error_cdf",
              key="csv_final_error_cdf")
