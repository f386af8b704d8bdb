"""The rule for the names a user gives models and activation graphs."""

from __future__ import annotations

import unicodedata

from neuronmap.loaders.errors import BadNameError

MAX_NAME_CHARS = 200  # far under Neo4j's limit on an indexed value (about 8 kB), which a longer name would hit


def check_name(name: object, what: str = "model") -> str:
    """Return ``name`` if it can name a model (or activation graph); raise BadNameError saying why it cannot.

    A name is a non-empty string of at most MAX_NAME_CHARS characters, not only white space, without control
    characters (newlines, tabs, NUL, …) or line separators, which would make it unprintable in one line.
    """
    if not isinstance(name, str):
        raise BadNameError(what, name, "is not a string")
    if not name.strip():
        raise BadNameError(what, name, "is empty or only white space")
    if len(name) > MAX_NAME_CHARS:
        raise BadNameError(what, name, f"is longer than {MAX_NAME_CHARS} characters")
    bad = sorted({c for c in name if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:3])
        raise BadNameError(what, name, f"contains control characters ({shown})")
    return name
