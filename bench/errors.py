"""The one exception the harness reports as a message instead of a traceback."""


class BenchError(Exception):
    """A failure with a message meant for the person running the benchmark."""
