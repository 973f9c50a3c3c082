"""/account and its two assets over plain HTTP: a strict CSP, and nothing from anywhere else."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

PAGE, SCRIPT, STYLESHEET = "/account", "/account/account.js", "/account/account.css"

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
"""A name the script gives createElementNS, not an address anything is fetched from."""


def policy(header: str) -> dict[str, list[str]]:
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


class References(HTMLParser):
    """Every URL-bearing attribute of the page, and anything inline that a CSP would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "action", "formaction", "srcset", "poster", "data"):
            if values.get(name) is not None:
                self.urls.append(str(values[name]))
        self.inline += [
            f"{tag} {name}" for name, _ in attrs if name == "style" or name.startswith("on")
        ]
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script" and "src" not in values:
            self.inline.append("<script> without src")


@pytest.mark.parametrize(
    ("path", "media_type"),
    [(PAGE, "text/html"), (SCRIPT, "text/javascript"), (STYLESHEET, "text/css")],
)
async def test_the_page_and_its_assets_are_served_under_a_policy_that_admits_only_self(
    http: httpx.AsyncClient, path: str, media_type: str
) -> None:
    response = await http.get(path)  # no token: the page signs in by itself

    assert response.status_code == 200
    assert response.headers["content-type"] == f"{media_type}; charset=utf-8"
    directives = policy(response.headers["content-security-policy"])
    assert directives["default-src"] == ["'none'"]
    for name in ("script-src", "style-src", "connect-src", "img-src", "form-action"):
        assert directives[name] == ["'self'"], name
    assert directives["base-uri"] == directives["frame-ancestors"] == ["'none'"]
    sources = {s for name, given in directives.items() if name.endswith("-src") for s in given}
    assert sources <= {"'self'", "'none'"}  # no host, scheme, 'unsafe-inline' or 'unsafe-eval'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", [PAGE, SCRIPT, STYLESHEET])
async def test_nothing_in_the_page_or_its_assets_names_another_origin(
    http: httpx.AsyncClient, path: str
) -> None:
    text = (await http.get(path)).text

    addresses = set(re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'`)<>]*", text, re.IGNORECASE))
    assert addresses <= {SVG_NAMESPACE}
    assert not re.search(r"""["'(]\s*//""", text)  # no protocol-relative //host either
    assert "@import" not in text
    assert not re.search(r"url\(\s*['\"]?(?!#)", text)  # CSS url() only to the page's own ids


async def test_the_page_loads_only_its_own_script_and_stylesheet_and_nothing_inline(
    http: httpx.AsyncClient,
) -> None:
    page = References()
    page.feed((await http.get(PAGE)).text)

    assert sorted(page.urls) == [STYLESHEET, SCRIPT]
    assert page.inline == []


async def test_the_script_calls_only_the_credits_api_of_its_own_origin(
    http: httpx.AsyncClient,
) -> None:
    script = (await http.get(SCRIPT)).text

    called = set(re.findall(r"""(?:api\(token, |fetch\()[`"']([^`"'?$]*)""", script))
    assert called == {
        "/v1/credits",
        "/v1/credits/transactions",
        "/v1/credits/purchases",
        "/v1/credits/purchase",
    }
    assert "localStorage" not in script
    assert "document.cookie" not in script
    assert "innerHTML" not in script  # the policy's Trusted Types would refuse it anyway


@pytest.mark.parametrize(
    ("path", "link"),
    [
        ("/checkout/success?session_id=cs_test_nobody", "/account"),
        ("/checkout/cancel", "/account#cancelled"),
    ],
)
async def test_the_checkout_pages_link_back_to_the_account_page(
    http: httpx.AsyncClient, path: str, link: str
) -> None:
    page = References()
    page.feed((await http.get(path)).text)

    assert link in page.urls
