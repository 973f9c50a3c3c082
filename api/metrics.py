"""Prometheus text exposition: request counts, the store's head and each view's lag."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

STARTED = time.time()


class RequestCounter:
    """Counts answered HTTP requests by method and status (an ASGI middleware)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return

            method = str(scope.get("method", ""))

            async def send_counting(message: Message) -> None:
                if message["type"] == "http.response.start":
                    self.counts[(method, message["status"])] += 1
                await send(message)

            await app(scope, receive, send_counting)

        return counted


def exposition(
    counter: RequestCounter, head: int, positions: dict[str, int], extra: dict[str, Any]
) -> str:
    """The metrics page."""
    lines = [
        "# HELP ledger_http_requests_total HTTP requests answered, by method and status.",
        "# TYPE ledger_http_requests_total counter",
        *(
            f'ledger_http_requests_total{{method="{method}",status="{status}"}} {count}'
            for (method, status), count in sorted(counter.counts.items())
        ),
        "# HELP ledger_store_head_position Highest position in the event store.",
        "# TYPE ledger_store_head_position gauge",
        f"ledger_store_head_position {head}",
        "# HELP ledger_projection_position Position each view has applied up to.",
        "# TYPE ledger_projection_position gauge",
        *(f'ledger_projection_position{{view="{n}"}} {p}' for n, p in sorted(positions.items())),
        "# HELP ledger_projection_lag_positions How far each view is behind the store's head.",
        "# TYPE ledger_projection_lag_positions gauge",
        *(
            f'ledger_projection_lag_positions{{view="{n}"}} {max(head - p, 0)}'
            for n, p in sorted(positions.items())
        ),
        "# HELP ledger_process_start_time_seconds When this process started.",
        "# TYPE ledger_process_start_time_seconds gauge",
        f"ledger_process_start_time_seconds {int(STARTED)}",
        *(f"{name} {value}" for name, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"
