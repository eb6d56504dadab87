"""Errors that stop start-up with a message for the user instead of a traceback."""


class StartupError(Exception):
    """Something named in the message (a file, a device, a setting) cannot be used."""
