"""Observers of the core's events: console progress, files in the run directory, MLflow."""
