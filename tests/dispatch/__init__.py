"""backend="auto": the trial and its on-disk cache."""
