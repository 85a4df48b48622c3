"""Contribution valuation: Shapley values (exact and truncated Monte Carlo) and the value
functions of coalitions of participants for each algorithm. Core: no I/O, no tracking."""
