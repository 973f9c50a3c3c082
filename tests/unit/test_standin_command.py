"""``ledger dev standin``, the Stripe stand-in served alone, as an operator starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.servers import bind_free_port


def test_a_port_in_use_is_named_with_what_to_do(tmp_path: Path) -> None:
    """It said "Error: Address already in use", naming neither the port nor the option."""
    with bind_free_port() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        refused = subprocess.run(  # noqa: S603 (the arguments are this test's own)
            [
                sys.executable,
                "-m",
                "api.cli",
                "dev",
                "standin",
                "--port",
                str(port),
                "--webhook-url",
                "http://127.0.0.1:9/v1/stripe/webhook",
            ],
            env={**os.environ, "LEDGER_DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert refused.returncode == 1
    assert refused.stderr == (
        f"Error: 127.0.0.1:{port} (the Stripe stand-in's) is in use by another program: "
        "give --port a free port\n"
    )


def test_an_address_that_is_no_http_address_is_a_usage_error(tmp_path: Path) -> None:
    """`--webhook-url notaurl` (or `--public-url`) was taken as it was: the stand-in started,
    said "webhooks to notaurl", and every payment's delivery failed there."""
    for option in ("--webhook-url", "--public-url"):
        refused = subprocess.run(  # noqa: S603 (the arguments are this test's own)
            [
                sys.executable,
                "-m",
                "api.cli",
                "dev",
                "standin",
                "--port",
                "0",
                "--webhook-url",
                "http://127.0.0.1:9/v1/stripe/webhook",
                option,
                "127.0.0.1:9",  # no scheme
            ],
            env={**os.environ, "LEDGER_DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )

        assert refused.returncode == 2, refused.stdout
        assert refused.stderr.splitlines()[-1] == (
            f"Error: Invalid value for '{option}': '127.0.0.1:9' is not an http(s) address "
            "with a host (http://127.0.0.1:8000/v1/stripe/webhook)"
        )
