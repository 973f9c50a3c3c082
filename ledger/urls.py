"""A URL as logs and error messages may show it: without a password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

UNREADABLE = "(a URL that cannot be read: scheme://user@host:port/path)"


def without_password(url: str) -> str:
    """``url`` without the password of its address or of its query (``?password=``); a
    value that is no URL is not shown at all (whatever it holds may be a secret)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is no number raises ValueError here)
    except ValueError:
        return UNREADABLE
    if "://" not in url or not parts.scheme:
        return UNREADABLE
    location = parts.netloc.rsplit("@", 1)[-1]
    if parts.username is not None:
        location = f"{parts.username}@{location}"
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    )
    return urlunsplit(parts._replace(netloc=location, query=query))
