"""Text as the ledger takes it from outside (arguments, the environment, URLs)."""

from __future__ import annotations

import math
import re

_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: bytes that are not UTF-8 (an argument's, the
    environment's) come to Python as lone surrogates (``\\udcff``), which neither PostgreSQL
    nor JSON nor a URL can hold."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def is_whole_number(text: str) -> bool:
    """``text`` is a whole number as the ledger reads one everywhere (variables, the
    command line's options, the API's query parameters): ASCII digits with an optional
    minus. int() also takes '1_000', '+5' and other scripts' digits ('٣')."""
    return _WHOLE_NUMBER.fullmatch(text) is not None


def unsigned_number(text: str, digits: int) -> int | None:
    """``text`` read as a count or a position (a page's limit or cursor, a read's least
    position), or None: ASCII digits only, of at most ``digits`` once the zeros that lead it
    are read as nothing (``0000000001`` is 1). Those zeros are not counted and never reach
    ``int``, which refuses over 4,300 digits, zeros too."""
    if not (text.isascii() and text.isdigit()):  # not '²' or '٣', which int() reads
        return None
    significant = text.lstrip("0") or "0"
    return int(significant) if len(significant) <= digits else None


def decimal_number(text: str) -> float | None:
    """``text`` read as a number as the ledger reads a decimal everywhere (variables, the
    command line's options), or None: ASCII, no underscores, not NaN (no comparison with it
    is true, so it passes every range). float() also takes '1_0' and other scripts' digits
    ('٣'); ``inf`` and exponents (``2e9``) are numbers."""
    if not text.isascii() or "_" in text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isnan(number) else number
