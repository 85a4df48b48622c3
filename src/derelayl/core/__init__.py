"""The relay / FL core: plain Python, numpy and torch objects in, results out.

Nothing in this package may import Hydra, OmegaConf, MLflow, DVC, Lightning or touch files;
``tests/test_architecture.py`` enforces that by reading the imports.
"""
