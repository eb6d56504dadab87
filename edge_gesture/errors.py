"""Errors that stop start-up with a message for the user instead of a traceback."""


class StartupError(Exception):
    """Something named in the message (a file, a device, a setting) cannot be used."""


class UsageError(Exception):
    """A command's input (a flag's value, a file or folder it was given) cannot be used; the
    message names it. The CLI prints it on one line and exits 2, as for a bad config."""
