"""Running another checkout of the code, for the benchmarks that compare two of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def runs_in(code: Path) -> dict[str, Any]:
    """Keywords for ``asyncio.create_subprocess_exec`` of ``python -c ...`` that make it
    import ``code``'s packages.

    ``python -c`` puts its working directory first on ``sys.path``, ahead of
    ``PYTHONPATH``: started from the project, every variant imported the project's own
    code. So the process runs in ``code``, with ``code`` on its ``PYTHONPATH`` too.
    """
    return {"cwd": str(code), "env": {**os.environ, "PYTHONPATH": str(code)}}


def named_checkout(text: str) -> tuple[str, Path]:
    """``name=path``: a name for the report and the checkout to run."""
    name, _, path = text.partition("=")
    return name, Path(path).resolve()
