"""Errors that mean "the user asked for something impossible" (reported as one line)."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and what is allowed."""


class DataError(RuntimeError):
    """Dataset files are missing or unreadable; the message says how to get them."""


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT stopped the run (a BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` swallows it); the edge closes the tracking run as KILLED."""

    def __init__(self, signum: int, name: str):
        super().__init__(name)
        self.signum, self.name = int(signum), name
        self.run_dir: str | None = None  # set by the pipeline: where to resume
