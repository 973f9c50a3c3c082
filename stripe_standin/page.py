"""The hosted checkout page's HTML: one self-contained document (inline CSS and script).

It works without its script (the form posts, the server answers); the script only formats
what is typed, switches the payment method's fields, and keeps a second click from paying
twice. Element ids and ``data-*`` attributes are what tests and scripts rely on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from stripe_standin.money import format_amount
from stripe_standin.objects import SessionRecord

# What the page shows again after a refused submission (all its fields but the CVC).
KEPT_FIELDS = ("email", "method", "bank_outcome", "card_number", "card_expiry", "card_name")
_FIELD_IDS = {
    "email": "email",
    "card_number": "card-number",
    "card_expiry": "card-expiry",
    "card_cvc": "card-cvc",
    "card_name": "card-name",
}


@dataclass(frozen=True)
class Problem:
    """Why the last submission was refused, shown above the Pay button."""

    message: str
    param: str | None = None


@dataclass(frozen=True)
class Typed:
    """What the customer typed, shown again after a refused submission (never the CVC)."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)


_STYLE = """
:root{--ink:#1a1f36;--muted:#697386;--line:#e3e8ee;--accent:#635bff;--accent-dark:#4b45c6;
--bad:#df1b41;--panel:#f7f8fa;font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;color:var(--ink);font-size:15px;line-height:1.45}
*{box-sizing:border-box}
body{margin:0;background:#fff}
input[type=radio]{accent-color:var(--accent)}
.checkout{display:grid;grid-template-columns:1fr 1fr;min-height:100vh}
.summary{background:var(--panel);padding:56px 64px;border-right:1px solid var(--line)}
.pay{padding:56px 64px;max-width:520px}
.merchant{display:flex;align-items:center;gap:12px;margin-bottom:40px}
.back{color:var(--muted);text-decoration:none;font-weight:500}
.back:hover{color:var(--ink)}
.badge{background:#ffde92;color:#a04100;font-size:11px;font-weight:700;letter-spacing:.04em;
text-transform:uppercase;padding:2px 6px;border-radius:4px}
.eyebrow{color:var(--muted);font-weight:500;margin:0 0 4px}
.total{font-size:36px;font-weight:600;margin:0 0 32px;letter-spacing:-.01em}
.lines{list-style:none;margin:0;padding:0}
.line{display:flex;justify-content:space-between;gap:16px;padding:12px 0}
.line-title{margin:0;font-weight:500}
.line-sub{margin:2px 0 0;color:var(--muted);font-size:13px}
.line-amount{margin:0;font-weight:500}
.row{display:flex;justify-content:space-between;padding:12px 0;border-top:1px solid var(--line)}
.row.due{font-weight:600}
h2{font-size:16px;font-weight:600;margin:0 0 12px}
label{display:block;color:var(--muted);font-size:13px;font-weight:500;margin:0 0 6px}
input[type=text],input[type=email]{width:100%;font:inherit;color:inherit;padding:10px 12px;
border:1px solid var(--line);border-radius:6px;background:#fff;outline:none;
box-shadow:0 1px 1px rgba(0,0,0,.03)}
input:focus{border-color:var(--accent);box-shadow:0 0 0 3px rgba(99,91,255,.2)}
input[aria-invalid=true]{border-color:var(--bad);color:var(--bad)}
input[readonly]{background:var(--panel);color:var(--muted)}
.section{margin-bottom:28px}
.methods{display:grid;grid-template-columns:1fr 1fr;gap:8px;margin-bottom:16px}
.method{display:flex;align-items:center;gap:8px;margin:0;padding:12px;border:1px solid var(--line);
border-radius:6px;color:var(--ink);font-size:14px;cursor:pointer}
.method:has(input:checked){border-color:var(--accent);box-shadow:0 0 0 1px var(--accent)}
fieldset{border:0;margin:0;padding:0;min-width:0}
.card-box{border:1px solid var(--line);border-radius:6px;margin-bottom:16px;overflow:hidden}
.card-box input{border:0;border-radius:0;box-shadow:none}
.card-box .split{display:grid;grid-template-columns:1fr 1fr;border-top:1px solid var(--line)}
.card-box .split input+input{border-left:1px solid var(--line)}
.card-box input:focus{box-shadow:inset 0 0 0 2px rgba(99,91,255,.35)}
.note{color:var(--muted);font-size:13px;margin:0 0 12px}
.outcome{display:flex;gap:8px;align-items:center;color:var(--ink);font-size:14px}
form:has(#method-bank:checked) #card-fields{display:none}
form:not(:has(#method-bank:checked)) #bank-fields{display:none}
.error{color:var(--bad);font-size:14px;min-height:20px;margin:4px 0 12px}
.pay-button{width:100%;font:inherit;font-weight:600;font-size:16px;color:#fff;background:var(--accent);
border:0;border-radius:6px;padding:13px;cursor:pointer;box-shadow:0 1px 2px rgba(0,0,0,.12)}
.pay-button:hover{background:var(--accent-dark)}
.pay-button[aria-busy=true]{opacity:.7;cursor:progress}
button:disabled{opacity:.5;cursor:not-allowed}
.link-button{display:block;margin:14px auto 0;font:inherit;font-size:14px;color:var(--muted);
background:none;border:0;cursor:pointer;text-decoration:underline}
.status{padding:12px 14px;border-radius:6px;margin:0 0 24px;font-weight:500}
.status-complete{background:#d7f7c2;color:#05690d}
.status-expired{background:#ffe7f2;color:#b3093c}
.tools{margin-top:40px;border-top:1px solid var(--line);padding-top:16px;color:var(--muted);font-size:13px}
.tools summary{cursor:pointer;font-weight:500}
.tools button{font:inherit;font-size:13px;padding:6px 10px;border:1px solid var(--line);
border-radius:6px;background:#fff;cursor:pointer}
.footer{margin-top:32px;color:var(--muted);font-size:12px;text-align:center}
@media (max-width:860px){.checkout{grid-template-columns:1fr}.summary,.pay{padding:32px 24px}
.summary{border-right:0;border-bottom:1px solid var(--line)}.pay{max-width:none}}
"""

_SCRIPT = """
(function () {
  var form = document.getElementById('checkout-form');
  if (!form) { return; }
  var card = document.getElementById('card-fields');
  var bank = document.getElementById('bank-fields');
  function chooseMethod() {
    var byBank = document.getElementById('method-bank').checked;
    card.disabled = byBank;
    bank.disabled = !byBank;
  }
  form.addEventListener('change', function (event) {
    if (event.target.name !== 'method') { return; }
    chooseMethod();
    document.getElementById('card-error').textContent = '';  // it was about the other method
  });
  chooseMethod();
  function digitsOf(input, most) { return input.value.replace(/\\D/g, '').slice(0, most); }
  var number = document.getElementById('card-number');
  number.addEventListener('input', function () {
    number.value = digitsOf(number, 19).replace(/(\\d{4})(?=\\d)/g, '$1 ');
  });
  var expiry = document.getElementById('card-expiry');
  expiry.addEventListener('input', function () {
    var d = digitsOf(expiry, 4);
    expiry.value = d.length > 2 ? d.slice(0, 2) + ' / ' + d.slice(2) : d;
  });
  var cvc = document.getElementById('card-cvc');
  cvc.addEventListener('input', function () { cvc.value = digitsOf(cvc, 4); });
  window.addEventListener('pageshow', function (event) {
    if (!event.persisted) { return; }  // back to a page the browser kept in memory
    delete form.dataset.sending;
    var pay = document.getElementById('pay');
    pay.removeAttribute('aria-busy');
    pay.textContent = 'Pay';
  });
  form.addEventListener('submit', function (event) {
    if (form.dataset.sending) { event.preventDefault(); return; }
    form.dataset.sending = 'true';
    var pay = document.getElementById('pay');
    if (event.submitter === pay) {
      pay.setAttribute('aria-busy', 'true');
      pay.textContent = 'Processing\\u2026';
    }
  });
})();
"""

_BANNERS = {
    "complete": "This Checkout Session is complete: the payment was submitted.",
    "expired": "This Checkout Session has expired. Start a new purchase to pay.",
}


def _attr(value: Any) -> str:
    return escape(str(value), quote=True)


def _lines(record: SessionRecord, currency: str) -> str:
    items = record.line_items
    credits = sum(int(item["quantity"]) for item in items)
    amount = int(record.data["amount_total"] or 0)
    parts = []
    for item in items:
        unit = item["price"]["unit_amount"]
        parts.append(
            f"{escape(str(item['description']))}: {int(item['quantity']):,} &times; "
            f"{escape(format_amount(int(unit), currency))}"
        )
    detail = "; ".join(parts) or "Checkout"
    return (
        '<ul class="lines">'
        '<li class="line"><div>'
        f'<p class="line-title" id="credits" data-credits="{credits}">{credits} credits</p>'
        f'<p class="line-sub" id="line-detail">{detail}</p>'
        f'</div><p class="line-amount">{escape(format_amount(amount, currency))}</p></li>'
        "</ul>"
    )


def _input(
    name: str,
    typed: Typed,
    problem: Problem | None,
    *,
    kind: str = "text",
    extra: str = "",
    value: str | None = None,
) -> str:
    field_id = _FIELD_IDS[name]
    invalid = ' aria-invalid="true"' if problem is not None and problem.param == name else ""
    shown = typed.get(name) if value is None else value
    return (
        f'<input id="{field_id}" name="{name}" type="{kind}" value="{_attr(shown)}"'
        f' aria-describedby="card-error"{invalid}{extra}>'
    )


def render_page(
    record: SessionRecord, problem: Problem | None = None, typed: Typed | None = None
) -> str:
    """The checkout page for one session; after a refused submission, why, and what was typed."""
    typed = typed or Typed()
    data = record.data
    session_id = _attr(record.id)
    status = str(data["status"])
    amount = int(data["amount_total"] or 0)
    currency = str(data["currency"] or "")
    amount_text = escape(format_amount(amount, currency))
    names = ", ".join(str(item["description"]) for item in record.line_items) or "Checkout"
    cancel_url = data.get("cancel_url")
    back = (
        f'<a class="back" id="cancel-link" href="{_attr(cancel_url)}">&larr; Back</a>'
        if cancel_url
        else ""
    )
    banner = _BANNERS.get(status, "")
    status_line = (
        f'<p id="status" class="status status-{_attr(status)}" data-status="{_attr(status)}"'
        f"{'' if banner else ' hidden'}>{escape(banner or 'Status: ' + status)}</p>"
    )
    closed = "" if status == "open" else " disabled"
    fixed_email = data.get("customer_email")
    email = _input(
        "email",
        typed,
        problem,
        kind="email",
        extra=' autocomplete="email" placeholder="you@example.com"'
        + (" readonly" if fixed_email else ""),
        value=fixed_email or None,
    )
    number = _input(
        "card_number",
        typed,
        problem,
        extra=' inputmode="numeric" autocomplete="cc-number" placeholder="1234 1234 1234 1234"',
    )
    expiry = _input(
        "card_expiry",
        typed,
        problem,
        extra=' inputmode="numeric" autocomplete="cc-exp" placeholder="MM / YY"',
    )
    cvc = _input(
        "card_cvc",
        typed,
        problem,
        extra=' inputmode="numeric" autocomplete="cc-csc" placeholder="CVC"',
        value="",
    )
    name = _input(
        "card_name", typed, problem, extra=' autocomplete="cc-name" placeholder="Full name on card"'
    )
    by_bank = typed.get("method") == "bank_transfer"
    card_checked, bank_checked = ("", " checked") if by_bank else (" checked", "")
    fails = typed.get("bank_outcome") == "fail"
    succeeds_checked, fails_checked = ("", " checked") if fails else (" checked", "")
    error = escape(problem.message) if problem is not None else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{amount_text} &middot; {escape(names)} &middot; Checkout</title>
<style>{_STYLE}</style>
</head>
<body>
<main class="checkout" data-session-id="{session_id}" data-status="{_attr(status)}">
<section class="summary" aria-label="Order summary">
<header class="merchant">{back}<span class="badge">Test mode</span></header>
<p class="eyebrow" id="product">{escape(names)}</p>
<p class="total"><span id="amount" data-amount="{amount}" data-currency="{_attr(currency)}">{amount_text}</span></p>
{_lines(record, currency)}
<div class="row"><span>Subtotal</span><span>{amount_text}</span></div>
<div class="row due"><span>Total due</span><span id="total-due">{amount_text}</span></div>
</section>
<section class="pay" aria-label="Payment">
{status_line}
<form id="checkout-form" method="post" action="/c/pay/{session_id}/pay" novalidate>
<fieldset id="all-fields"{closed}>
<div class="section">
<h2>Contact information</h2>
<label for="email">Email</label>
{email}
</div>
<div class="section">
<h2>Payment method</h2>
<div class="methods">
<label class="method"><input type="radio" name="method" value="card" id="method-card"{card_checked}> Card</label>
<label class="method"><input type="radio" name="method" value="bank_transfer" id="method-bank"{bank_checked}> Bank transfer (delayed)</label>
</div>
<fieldset id="card-fields">
<label for="card-number">Card information</label>
<div class="card-box">
{number}
<div class="split">
{expiry}
{cvc}
</div>
</div>
<label for="card-name">Cardholder name</label>
{name}
</fieldset>
<fieldset id="bank-fields">
<p class="note">The session completes now and the payment settles later, as with Stripe's
delayed notification methods: <code>checkout.session.completed</code> arrives unpaid, then the
outcome follows.</p>
<label class="outcome"><input type="radio" name="bank_outcome" value="success" id="bank-succeeds"{succeeds_checked}> The transfer arrives</label>
<label class="outcome"><input type="radio" name="bank_outcome" value="fail" id="bank-fails"{fails_checked}> The transfer fails</label>
</fieldset>
</div>
<div id="card-error" class="error" role="alert">{error}</div>
<button id="pay" class="pay-button" type="submit">Pay</button>
<button id="cancel" class="link-button" type="submit" formaction="/c/pay/{session_id}/cancel" formnovalidate>Cancel</button>
<details class="tools">
<summary>Test mode tools</summary>
<p>Cards: 4242 4242 4242 4242 succeeds, 4000 0000 0000 0002 is declined, 4000 0000 0000 9995
has insufficient funds; any future date, any CVC.</p>
<button id="expire" type="submit" formaction="/c/pay/{session_id}/expire" formnovalidate>Expire</button>
</details>
</fieldset>
</form>
<p class="footer">Stripe stand-in &middot; no real payment is made</p>
</section>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""
