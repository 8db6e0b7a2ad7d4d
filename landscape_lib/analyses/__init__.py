"""Analyses of trained models, weight trajectories and loss-surface grids."""
