"""Errors that are the user's to fix: the CLI prints them without a traceback."""


class UserError(Exception):
    """Bad input or usage; the message names the file, the entry and the problem."""
