"""I/O at the edge: MLflow tracking (and opening its store safely), the run folder (its lock,
files, checkpoints, ledger files, the ledger's anchor and verify's audit), progress lines, signal
handling and the Hydra sweep callback. Observers of the core's events live here."""
