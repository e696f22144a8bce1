"""Errors that carry a message for the user: what is wrong, where, and what to do."""


class EyelipError(Exception):
    """Base class; pipeline scripts and the CLI print these without a traceback."""


class ParamError(EyelipError):
    """A value in params.yaml is missing or invalid; the message names the dotted key."""


class DataError(EyelipError):
    """A dataset file is missing, unreadable or malformed; the message names the file."""
