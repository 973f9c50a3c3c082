"""docs/stripe-standin.md gives ``run_standin``'s signature as the code has it."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

from stripe_standin import run_standin

DOC = Path(__file__).resolve().parents[2] / "docs" / "stripe-standin.md"


def signature_as_written(function: Callable[..., object]) -> str:
    """``port=0, …, *, name=default, …`` with the doc's double quotes."""
    shown: list[str] = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and "*" not in shown:
            shown.append("*")
        shown.append(f"{parameter.name}={parameter.default!r}".replace("'", '"'))
    return ", ".join(shown)


def test_the_documented_signature_of_run_standin_is_the_code_s() -> None:
    written = re.search(r"`run_standin\((port=.*?)\)`", DOC.read_text(), re.S)
    assert written, "docs/stripe-standin.md no longer gives run_standin's signature"

    assert " ".join(written[1].split()) == signature_as_written(run_standin)
