"""Initializers: SEEDS E's comparison table (error, convergence speed, condition number,
spectral norm, effective-rank ratio, wall time, divergence) and training curves per initializer."""
import streamlit as st

from dashboard import factor_view

st.title("Initializers")
st.caption("Per initializer: centre and 95% interval over the runs of each row. Matrix "
           "statistics are at each run's last finite epoch; diverged runs are counted, and left "
           "out of the means of values they no longer have.")
factor_view.show("init", ["final_error", "conv_epoch", "avg_cond", "spectral_norm",
                          "eff_rank_ratio", "wall_time", "final_val_loss"],
                 ["val_acc", "train_loss", "avg_cond", "avg_eff_rank_ratio"], conv=True)
