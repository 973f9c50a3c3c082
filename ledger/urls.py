"""A URL as logs and error messages may show it (without a password), and where it leads."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

from ledger.text import is_utf8_text

UNREADABLE = "(a URL that cannot be read: scheme://user@host:port/path)"

_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
"""Query parameters that hold a secret (libpq's and asyncpg's names)."""

_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*)(:[0-9]{1,5})?")
"""One host of a URL's host list: a name or address (IPv6 in brackets), an optional port."""


def readable(url: str) -> bool:
    """Whether ``url`` is ``scheme://[user[:password]@]host[:port][,host[:port]…][/…]``,
    each port a number of 1 to 65535 (PostgreSQL takes a list of hosts), with no '@' in
    its path, and UTF-8 text (asyncpg failed on one that is not: "unexpected error:
    AttributeError: 'Protocol' object has no attribute '_on_error'")."""
    if not is_utf8_text(url):
        return False
    scheme, separator, rest = url.partition("://")
    if not separator or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return False
    # An '@' after the first '/' is a password's '/' not written %2F: clients (asyncpg, libpq)
    # end the address at that '/', so the password's first part reads as a host and port
    # and its rest, with the real host, as the path that messages show.
    if "@" in re.split(r"[?#]", rest, maxsplit=1)[0].partition("/")[2]:
        return False
    hosts = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]
    for host in hosts.split(","):
        matched = _HOST.fullmatch(host)
        if matched is None:
            return False
        if matched[2] is not None and not 1 <= int(matched[2][1:]) <= 65535:
            return False
    return True


def names_a_database(url: str) -> bool:
    """Whether a PostgreSQL ``url`` names its database: in its path (``/ledger``) or its
    query (``?dbname=``, ``?database=``). Without one, PostgreSQL takes the user's name."""
    address, _, query = url.partition("?")
    path = address.partition("://")[2].partition("/")[2]
    parameters = {key for key, value in parse_qsl(query.partition("#")[0]) if value}
    return bool(path.partition("#")[0].strip("/")) or bool({"dbname", "database"} & parameters)


def without_password(url: str, *, hide_user: bool = False) -> str:
    """``url`` without the password of its address or of its query (``?password=``); a
    value that is no URL is not shown at all (whatever it holds may be a secret).
    ``hide_user``: the user too (NATS takes a token there)."""
    if not readable(url):
        return UNREADABLE
    scheme, _, rest = url.partition("://")
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    address, tail = rest[:end], rest[end:]
    user, at, hosts = address.rpartition("@")
    if at:
        address = f"…@{hosts}" if hide_user else f"{user.partition(':')[0]}@{hosts}"
    path, question, query = tail.partition("?")
    if question:
        query, hash_mark, fragment = query.partition("#")
        kept = [
            (k, v)
            for k, v in parse_qsl(query, keep_blank_values=True)
            if k not in _SECRET_PARAMETERS
        ]
        tail = path + (f"?{urlencode(kept, safe='/')}" if kept else "") + hash_mark + fragment
    return f"{scheme}://{address}{tail}"


def names_this_machine(host: str) -> bool:
    """Whether ``host`` (a name, or an address: IPv6 without its brackets) is this machine:
    ``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``)."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def over_tls_or_here(url: str) -> bool:
    """Whether what is sent to ``url`` goes over TLS, or stays on this machine: the one
    answer for the ``http://`` URLs production takes (a webhook endpoint's, the public
    URL). This machine is what ``names_this_machine`` names; not a ``*.localhost`` name,
    which RFC 6761 asks resolvers to answer with loopback, but which glibc's (hosts file,
    then DNS, as on these machines) sends to DNS, search domains appended."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # http://[::1 (no "]"): no host this machine's
        return url[:7].lower() != "http://"
    # urlsplit drops tabs and line ends, which no client sends to: not this machine's.
    return parts.scheme != "http" or (names_this_machine(host) and url.isprintable())
