"""Errors that mean "the user asked for something impossible" (reported as one line)."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and what is allowed."""
