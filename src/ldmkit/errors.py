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


MAX_SHOWN = 200
"""At most this many characters of any user-supplied value appear in an error message."""


def shown(value: object, limit: int = MAX_SHOWN, *, quote: bool = True) -> str:
    """repr(value) for a message, at most `limit` characters: a huge or deeply nested value (e.g. from a YAML
    file) is summarised without building its full repr, and the cut is marked with the original length.
    quote=False shows a string as it is (control characters escaped), e.g. a message being passed on."""
    import reprlib

    if not quote and isinstance(value, str):
        text = printable(value)
        return text if len(text) <= limit else text[: limit - 30].rstrip() + f"... ({len(value)} characters in all)"

    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset = 3, 8, 8, 8, 8
    r.maxstring = r.maxother = r.maxlong = limit
    text = r.repr(value)
    if len(text) <= limit:
        return text
    total = f"{len(value)} characters" if isinstance(value, str) else "value"
    return text[: limit - 30].rstrip() + f"... ({total} in all)"


def printable(text: str) -> str:
    """`text` with control and other non-printable characters escaped (a file name holding a newline stays
    on one line of a text report); printable text, non-ASCII included, is unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
