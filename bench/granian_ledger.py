"""The ledger's app for granian (``--factory bench.granian_ledger:app_from_env``).

Only for measuring the service on granian beside uvicorn (``bench.workers``): the
settings from the environment, as ``ledger serve`` reads them, and the same app. The
projector runs on its own (``ledger project``), and nothing here checks ports or says
"ready": granian binds and serves.
"""

from __future__ import annotations

from litestar import Litestar

from api.app import create_app
from api.settings import Settings


def app_from_env() -> Litestar:
    settings = Settings.from_env()
    return create_app(settings, development_extras=not settings.production)
