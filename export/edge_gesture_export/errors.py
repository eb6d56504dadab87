class ExportError(Exception):
    """A user-facing failure: the message says what was wrong and what to do; the CLI prints it
    without a traceback and exits non-zero."""


class VerificationFailed(ExportError):
    """The exported bundle does not match the PyTorch model within the stated tolerance."""
