"""The application's wiring at the edge: a resolved Hydra config becomes core objects
(``context``), each algorithm family's runner adapts the core to the pipeline
(``runners``), ``pipeline`` runs one experiment and writes what every run leaves behind, and
``schema`` checks every config value before anything is written."""
