"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""


class LdmkitError(Exception):
    """Base class: the message says what was wrong and what is allowed."""


class UsageError(LdmkitError, ValueError):
    """A bad argument or value given by the user."""


class ModelFolderError(LdmkitError):
    """A model folder or weight file is missing, malformed or refused."""


class UnsafeFileError(ModelFolderError):
    """A file was refused because loading it could run code (pickle, .py in a model folder)."""


class DataError(LdmkitError):
    """A dataset could not be read (too many bad files, unknown format, ...)."""
