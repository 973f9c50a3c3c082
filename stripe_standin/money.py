"""Integer money formatting (amounts are in the currency's minor unit)."""

from __future__ import annotations

ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()  # noqa: SIM905
)
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}
CURRENCIES = frozenset(
    """
    aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp
    byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel
    gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd
    kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn
    nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd
    shp sle sll sos srd std szl thb tjs tnd top try ttd twd tzs uah ugx usd uyu uzs vnd vuv
    wst xaf xcd xcg xof xpf yer zar zmw
    """.split()  # noqa: SIM905
)
"""The currencies Stripe takes (docs.stripe.com/currencies, as of 2025), lower-case: any other
is refused as Stripe refuses it. The ledger keeps its own copy (ledger/domain/currencies.py),
which the stand-in does not import; a test holds the two the same."""


def minor_digits(currency: str) -> int:
    """How many minor-unit digits the currency has."""
    if currency in ZERO_DECIMAL:
        return 0
    return 3 if currency in THREE_DECIMAL else 2


def format_amount(amount: int, currency: str) -> str:
    """``(1000, "usd")`` -> ``"$10.00"``; ``(1000, "chf")`` -> ``"10.00 CHF"``."""
    digits = minor_digits(currency)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**digits)
    number = f"{major:,}" + (f".{minor:0{digits}d}" if digits else "")
    symbol = SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency.upper()}"
