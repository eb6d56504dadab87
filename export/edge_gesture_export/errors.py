class ExportError(Exception):
    """A user-facing failure: the message says what was wrong and what to do; the CLI prints it
    without a traceback and exits non-zero."""


class VerificationFailed(ExportError):
    """The exported bundle does not match the PyTorch model within the stated tolerance; the
    bundle is kept for inspection and `result` describes it."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result
