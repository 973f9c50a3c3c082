"""A number given to a ``ledger`` command is read as the environment and the API read one:
a whole number is ASCII digits with an optional minus; a decimal is ASCII, and a number."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from api.cli import main
from api.reconcile import parse_duration, parse_since, reconcile_seconds_from_env
from ledger.adapters.stripe_timeout import timeout_from_env
from tests.unit.test_cli_help import commands


def parameters_of(kind: type[click.ParamType]) -> list[tuple[str, click.Parameter]]:
    """Every option and argument of every ``ledger`` command whose type is ``kind``, but a
    counted flag (``-v``, on every command once ``main`` has run in this process: it takes
    no written value)."""
    return [
        (f"{path} {parameter.opts[0]}", parameter)
        for path, command in commands(main)
        for parameter in command.params
        if isinstance(parameter.type, kind) and not getattr(parameter, "count", False)
    ]


def whole_number_parameters() -> list[tuple[str, click.Parameter]]:
    return parameters_of(click.types.IntParamType)


def decimal_parameters() -> list[tuple[str, click.Parameter]]:
    return parameters_of(click.types.FloatParamType)


def accepting(parameters: list[tuple[str, click.Parameter]], written: str) -> list[str]:
    """The names of ``parameters`` whose type converts ``written`` without a usage error."""
    context = click.Context(main)
    accepted = []
    for name, parameter in parameters:
        try:
            parameter.type.convert(written, parameter, context)
        except click.BadParameter:
            continue
        accepted.append(name)
    return accepted


@pytest.mark.parametrize("written", ["1_000", "٣", "\uff10", "+5", "0x10", "1e3"])
def test_every_whole_number_option_refuses_what_only_python_reads_as_one(written: str) -> None:
    """`ledger accounts open acct_x --allowance 1_000` opened an account with 1,000 credits a
    month, and `--allowance ٣` one with 3: click converts with int(), which takes
    underscores and other scripts' digits, where DEFAULT_MONTHLY_ALLOWANCE (the settings'
    whole_number) and the API's bodies and query parameters refuse them."""
    parameters = whole_number_parameters()

    assert any(name == "ledger accounts open --allowance" for name, _ in parameters)
    assert not accepting(parameters, written)


@pytest.mark.parametrize(("written", "read"), [("250", 250), (" 7 ", 7), ("0", 0)])
def test_an_allowance_in_digits_is_read_as_before(written: str, read: int) -> None:
    [allowance] = [p for name, p in whole_number_parameters() if name.endswith("--allowance")]

    assert allowance.type.convert(written, allowance, click.Context(main)) == read


def test_a_refused_allowance_is_a_usage_error_naming_the_option() -> None:
    """Refused while the arguments are read, before the command runs (or reads a setting),
    as not a whole number: it was "'1_000' is not a valid integer range." (click's name of
    the type), which a newcomer's `--allowance abc` read as a range they had not given."""
    [opening] = [command for path, command in commands(main) if path == "ledger accounts open"]

    with pytest.raises(click.BadParameter) as refused:
        opening.make_context("ledger accounts open", ["acct_x", "--allowance", "1_000"])

    assert refused.value.exit_code == 2
    assert refused.value.format_message() == (
        "Invalid value for '--allowance': '1_000' is not a whole number."
    )


@pytest.mark.parametrize("written", ["nan", "NaN", " -nan ", "1_0", "٣", "\uff11.5"])
def test_every_decimal_option_refuses_what_is_no_number_or_only_python_reads_as_one(
    written: str,
) -> None:
    """`ledger audit verify --max-time-skew nan` passed the range check (no comparison with
    NaN is true) and ended as "unexpected error: ValueError: cannot convert float NaN to
    integer" after connecting, where a usage error names the option at once; `1_0` and `٣`
    were read as 10 and 3 seconds."""
    parameters = decimal_parameters()

    assert any(name == "ledger audit verify --max-time-skew" for name, _ in parameters)
    assert not accepting(parameters, written)


@pytest.mark.parametrize(
    ("written", "read"), [("90", 90.0), ("2e9", 2e9), ("0.5", 0.5), ("inf", float("inf"))]
)
def test_a_time_skew_is_read_as_before(written: str, read: float) -> None:
    [skew] = [p for name, p in decimal_parameters() if name.endswith("--max-time-skew")]

    assert skew.type.convert(written, skew, click.Context(main)) == read


def test_a_nan_time_skew_is_a_usage_error_naming_the_option() -> None:
    [verify] = [command for path, command in commands(main) if path == "ledger audit verify"]

    with pytest.raises(click.BadParameter) as refused:
        verify.make_context("ledger audit verify", ["--max-time-skew", "nan"])

    assert refused.value.exit_code == 2
    assert refused.value.format_message() == (
        "Invalid value for '--max-time-skew': 'nan' is not a number."
    )


@pytest.mark.parametrize("written", ["\u0663m", "1\u0661h", "3\u00a0d", "\uff12w"])
def test_a_duration_or_a_moment_back_is_written_in_ascii_digits(written: str) -> None:
    """`ledger stripe reconcile --older-than ٣m` looked for purchases older than 3 minutes
    and `--since ٣d` went 3 days back: the durations' pattern read any script's digits (and
    spaces), where every number option takes ASCII digits only."""
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(written)
    with pytest.raises(ValueError, match="is neither a duration"):
        parse_since(written, datetime(2026, 12, 7, tzinfo=UTC))


def test_a_duration_in_digits_is_read_as_before() -> None:
    assert parse_duration("1h 30m") == timedelta(minutes=90)
    assert parse_since("3d", datetime(2026, 12, 7, tzinfo=UTC)) == datetime(2026, 12, 4, tzinfo=UTC)


@pytest.mark.parametrize("written", ["1_0", "\u0663", "\uff11.5", "nan", " -nan "])
def test_the_decimal_variables_refuse_what_the_decimal_options_refuse(written: str) -> None:
    """STRIPE_TIMEOUT_SECONDS and LEDGER_RECONCILE_SECONDS read '1_0' as 10 seconds and '٣'
    as 3 (float()), where the command line's decimal options refuse both."""
    with pytest.raises(ValueError, match="STRIPE_TIMEOUT_SECONDS must be"):
        timeout_from_env({"STRIPE_TIMEOUT_SECONDS": written})
    with pytest.raises(ValueError, match="LEDGER_RECONCILE_SECONDS must be"):
        reconcile_seconds_from_env({"LEDGER_RECONCILE_SECONDS": written})


def test_the_decimal_variables_read_numbers_as_before() -> None:
    assert timeout_from_env({"STRIPE_TIMEOUT_SECONDS": " 2.5 "}) == 2.5
    assert reconcile_seconds_from_env({"LEDGER_RECONCILE_SECONDS": "1e2"}) == 100.0
    assert reconcile_seconds_from_env({"LEDGER_RECONCILE_SECONDS": "0"}) is None
