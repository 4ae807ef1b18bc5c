"""Training frameworks (Trainer, accelerate, Lightning) and the real-data examples."""
