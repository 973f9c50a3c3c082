"""The form of a webhook endpoint's URL: what registration takes and what is sent to.

One pattern, the one the OpenAPI document publishes (``WebhookEndpointRequest.url``),
checked at three places: the HTTP route (the body's pattern, 422), the registry
(``EndpointRegistry.create``, whoever calls it) and the dispatcher at every delivery
(``why_not_taken``), which also covers endpoints stored before a rule was added to it.
A host that is neither a DNS name nor an IP address in its usual form is not sent to:
glibc's resolver reads ``127.1``, ``2130706433`` or ``0x7f.1`` as 127.0.0.1 and
``010.0.0.1`` as 8.0.0.1, so such a URL names one receiver to its reader and reaches
another; the rest (``a..b``, ``-a-``, a 64-character label) could never be delivered to.
"""

from __future__ import annotations

import functools
import re

MAX_URL_LENGTH = 2048
PORT_PATTERN = (
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
)
"""1 to 65535, written without leading zeros."""


_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_PATTERN = rf"({_OCTET}\.){{3}}{_OCTET}"
"""RFC 3986's IPv4address: four decimal octets, none with a leading zero."""


def _ipv6_pattern() -> str:
    """RFC 3986's IPv6address (section 3.2.2) as a regular expression: its nine forms."""
    h16 = "[0-9A-Fa-f]{1,4}"
    ls32 = rf"({h16}:{h16}|{IPV4_PATTERN})"
    forms = [rf"({h16}:){{6}}{ls32}", rf"::({h16}:){{5}}{ls32}"]
    for k in range(2, 9):  # [ *(k-2)( h16 ":" ) h16 ] "::" then what is left of 8 pieces
        head = f"(({h16}:){{0,{k - 2}}}{h16})?"
        tail = {6: ls32, 7: h16, 8: ""}.get(k, f"({h16}:){{{6 - k}}}{ls32}")
        forms.append(f"{head}::{tail}")
    return "(" + "|".join(f"({form})" for form in forms) + ")"


IPV6_PATTERN = _ipv6_pattern()
_HOST_END = "([:/?#]|$)"
_LABEL = "[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME_PATTERN = (
    rf"(?=[A-Za-z0-9_.-]{{1,253}}\.?{_HOST_END})"  # 253 characters at most, and a final dot
    rf"({_LABEL}\.)*(?![0-9]+\.?{_HOST_END}){_LABEL}\.?"
)
"""A DNS name a resolver can be asked for (RFC 1123 2.1): labels of 1 to 63 letters, digits
and hyphens, neither first nor last a hyphen, 253 characters in all, the last label not all
digits (that is an IPv4 address, or nothing). Also ``_`` (not in RFC 1123, but resolved:
Docker Compose names, /etc/hosts), and a final dot (the root's: ``example.com.`` is the
same name written in full, and resolves)."""
URL_PATTERN = (
    rf"[Hh][Tt][Tt][Pp][Ss]?://({IPV4_PATTERN}|{HOST_NAME_PATTERN}|\[{IPV6_PATTERN}\])"
    rf"(:{PORT_PATTERN})?([/?#][\x21-\x7e]*)?"
)
"""http or https in any case (RFC 3986); an IPv4 address, a host name, or an IPv6 address in
brackets; an optional port; then printable ASCII."""


_URL = re.compile(URL_PATTERN)
_HOST = re.compile(rf"{IPV4_PATTERN}|{HOST_NAME_PATTERN}|\[{IPV6_PATTERN}\]")


@functools.lru_cache(maxsize=1024)
def why_not_taken(url: str) -> str | None:
    """None for a URL registration takes (``URL_PATTERN``, at most ``MAX_URL_LENGTH``);
    otherwise what is wrong with it, in words an operator can act on. Cached: the
    dispatcher asks it of every delivery, of a few URLs."""
    if len(url) > MAX_URL_LENGTH:
        return f"the url is longer than {MAX_URL_LENGTH} characters"
    if _URL.fullmatch(url) is not None:
        return None
    scheme, separator, rest = url.partition("://")
    if separator and scheme.lower() in ("http", "https"):
        closed = rest.find("]") + 1 if rest.startswith("[") else 0
        host = rest[:closed] if closed else re.split("[:/?#]", rest)[0]
        if _HOST.fullmatch(host) is None:
            return (
                f"its host {host!r} is neither a DNS name (RFC 1123 labels) nor an IP address "
                "written in its usual form"
            )
    return "it is not a valid URL (http or https, a port of 1 to 65535, printable ASCII)"
