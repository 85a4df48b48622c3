"""Simulation primitives every other part builds on: named random streams, the events the core
emits, the one error type of bad input, inequality statistics, and simulated devices (compute
speed, bandwidth, bytes moved). Core: standard library, numpy and torch only."""
