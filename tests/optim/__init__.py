"""The LaPerm optimizer: syncs, AMP, checkpoints, copies, compile, robustness, layouts."""
