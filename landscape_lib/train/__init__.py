"""Training one run: the builder of its data, model and optimizer (`build`), the seeded loop with
its per-epoch rows and checkpoints (`engine`), what is measured (`metrics`), what is saved
(`checkpoints`) and what it ran on (`environment`)."""
