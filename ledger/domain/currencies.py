"""The currencies Stripe charges in, and how their amounts must be stated.

From Stripe's "Supported currencies" page (https://docs.stripe.com/currencies, its
presentment currencies, zero-decimal, three-decimal and special cases), as of 2025; neither
the stripe SDK nor Python's standard library carries such a list. Lower-case, as Stripe takes
them. ``CREDIT_CURRENCY`` not on it is a warning, not a refusal (``api.settings.
unlisted_currency``): a currency Stripe adds later must not stop a release that does not know
it from starting; one Stripe does not take makes every purchase a 502 at checkout.

Zero-decimal currencies (jpy, krw, ...) need nothing: their minor unit is the unit itself,
and the ledger never divides an amount, it multiplies a price in minor units by credits."""

from __future__ import annotations

STRIPE_CURRENCIES = frozenset(
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

AMOUNT_STEPS = {
    # Two-decimal in the API, but charged in whole krónur only: 100 is 1 kr (Stripe refuses
    # other amounts with invalid_charge_amount_no_decimal_compatible since 2023).
    "isk": 100,
    # Three-decimal: Stripe's partners take amounts whose last digit is 0.
    "bhd": 10,
    "jod": 10,
    "kwd": 10,
    "omr": 10,
    "tnd": 10,
}
"""What every amount charged in the currency must be a multiple of, where it is not 1."""


def amount_step(currency: str) -> int:
    """The step every amount in ``currency`` is a multiple of (1 for most)."""
    return AMOUNT_STEPS.get(currency, 1)
