"""``ledger dev cluster`` refuses what it must not run with before it starts anything, in the
words of the other commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def ledger(args: list[str], tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LEDGER_", "STRIPE_", "DATABASE")) and k != "PORT"
    }
    return subprocess.run(  # noqa: S603 (the arguments are this test's own)
        [sys.executable, "-m", "api.cli", *args],
        env={**env, "LEDGER_DATA_DIR": str(tmp_path / "data"), **variables},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dev_cluster_refuses_production_as_dev_standin_does(tmp_path: Path) -> None:
    """It went on to start two PostgreSQL servers and replicas that all read production."""
    folder = tmp_path / "cluster"

    cluster = ledger(
        ["dev", "cluster", "--data", str(folder), "--port", "9", "--pg-port", "9"],
        tmp_path,
        LEDGER_ENV="production",
    )
    standin = ledger(
        ["dev", "standin", "--webhook-url", "http://127.0.0.1:9/v1/stripe/webhook"],
        tmp_path,
        LEDGER_ENV="production",
    )

    assert (cluster.returncode, standin.returncode) == (1, 1)
    assert cluster.stderr == (
        "Error: ledger dev cluster is for development, not LEDGER_ENV=production\n"
    )
    assert standin.stderr == (
        "Error: the Stripe stand-in is for development, not LEDGER_ENV=production\n"
    )
    assert not folder.exists()


def test_a_port_that_is_no_number_is_named_as_ledger_serve_names_it(tmp_path: Path) -> None:
    """It was "unexpected error: ValueError: invalid literal for int() ..."."""
    folder = tmp_path / "cluster"

    cluster = ledger(["dev", "cluster", "--data", str(folder)], tmp_path, PORT="abc")
    serve = ledger(["serve"], tmp_path, PORT="abc")

    assert (cluster.returncode, serve.returncode) == (1, 1)
    assert cluster.stderr == serve.stderr == "Error: PORT must be a whole number, not 'abc'\n"
    assert not folder.exists()
