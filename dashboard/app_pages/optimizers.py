"""Optimizers: loss, accuracy, gradient norm and peak memory per epoch and a final table per
optimizer (SEEDS E)."""
import streamlit as st

from dashboard import factor_view

st.title("Optimizers")
st.caption("Per optimizer: centre and 95% interval over the runs of each row. Peak memory is "
           "the largest per-epoch peak (GPU memory on CUDA).")
factor_view.show("optimizer", ["final_val_acc", "final_train_loss", "final_val_loss",
                               "grad_norm", "peak_mem_mb", "wall_time"],
                 ["train_loss", "val_acc", "grad_norm", "peak_mem_mb"])
