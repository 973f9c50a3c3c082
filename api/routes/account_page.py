"""``GET /account``: the customer's page, a reference front end with no build step.

Three files under ``api/web/`` (HTML, one vanilla script, one stylesheet), served as they
are by the service itself. The page signs in with the customer's ``credits`` token, kept
in the tab's ``sessionStorage`` only, and talks to ``/v1/credits*`` with ``fetch``; the
service keeps no session for it.

Every answer carries a Content-Security-Policy that admits nothing but this origin (and
no inline script or style at all), so the page can load no third-party code, fonts or
images, and a script injected into it could neither run nor send the token elsewhere.
``require-trusted-types-for 'script'`` makes Chromium refuse HTML strings written into
the page: the script builds every node with ``createElement`` and ``textContent``.
"""

from __future__ import annotations

from importlib.resources import files

from litestar import Response, get

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The page's address never carries a secret, but nothing on it needs to tell others either.
    "Referrer-Policy": "no-referrer",
    # Small files: revalidated every time, so a deploy reaches every open tab's next load.
    "Cache-Control": "no-cache",
}

_WEB = files("api") / "web"


def _asset(name: str, media_type: str) -> tuple[bytes, str]:
    return (_WEB / name).read_bytes(), media_type


PAGE = _asset("account.html", "text/html")
SCRIPT = _asset("account.js", "text/javascript")
STYLESHEET = _asset("account.css", "text/css")


def _serve(asset: tuple[bytes, str]) -> Response[bytes]:
    content, media_type = asset
    return Response(content, media_type=media_type, headers=SECURITY_HEADERS)


@get("/account", include_in_schema=False)
async def account_page() -> Response[bytes]:
    """The customer's page: balance, its last 90 days, purchases and a form to buy credits."""
    return _serve(PAGE)


@get("/account/account.js", include_in_schema=False)
async def account_script() -> Response[bytes]:
    """The page's script."""
    return _serve(SCRIPT)


@get("/account/account.css", include_in_schema=False)
async def account_stylesheet() -> Response[bytes]:
    """The page's stylesheet."""
    return _serve(STYLESHEET)


ROUTES = [account_page, account_script, account_stylesheet]
