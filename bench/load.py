"""The load generator: a process of its own, never the server's.

Throughput scenarios drive ``wrk`` (C, one thread, keep-alive connections) with a Lua
script written for the scenario, so the generator costs the 2-vCPU machine as little
CPU as possible; latency runs one request at a time over one keep-alive connection
with the standard library. Each prints one JSON line on stdout::

    python -m bench.load post --url http://127.0.0.1:8000 --path '/v1/accounts/acct_bench_%04d/spend' \\
        --accounts 1000 --token TOKEN --connections 64 --seconds 10
    python -m bench.load webhook --url ... --accounts-prefix acct_bench_ --accounts 1000 --count 60000 \
        --nonce N
    python -m bench.load get --url ... --path /v1/credits --token T1 --token T2 --seconds 10
    python -m bench.load latency --url ... --token T --account acct_long --account acct_short_%03d:100

``post`` sends ``{"amount": 1, "reason": "bench"}`` with a fresh ``Idempotency-Key`` to
a random account of ``--accounts`` (the path's ``%04d``); ``webhook`` sends
``checkout.session.completed`` events for the sessions ``bench.checkouts`` recorded
under ``--nonce`` (account ``n % --accounts`` for the n-th), each signed with the SDK's
``WebhookSignature.generate_signature_header`` (made before the run: wrk's Lua has no
HMAC); ``get`` cycles through the tokens.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import stripe

from bench import checkouts

RESULT_MARK = "BENCH_RESULT "
SPEND_BODY = '{"amount": 1, "reason": "bench"}'

# --- Lua for wrk -------------------------------------------------------------------------

_LUA_COMMON = r"""
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

statuses = {}
wraps = 0
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts, wrapped = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do counts[k] = (counts[k] or 0) + v end
    wrapped = wrapped + t:get("wraps")
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, '
    .. '"p99": %d, "max": %d, "mean": %.1f}, "statuses": {%s}, "wraps": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, table.concat(parts, ", "), wrapped))
end
"""

_LUA_POST = r"""
local counter = 0
local nonce = {nonce}
local path_format = {path}
local accounts = {accounts}
local body = {body}
local headers = {{["Authorization"] = "Bearer " .. {token}, ["Content-Type"] = "application/json"}}

function init(args)
  math.randomseed(os.time() + 7919 * id)
end

function request()
  counter = counter + 1
  headers["Idempotency-Key"] = nonce .. "-" .. id .. "-" .. counter
  local path = string.format(path_format, math.random(0, accounts - 1))
  return wrk.format("POST", path, headers, body)
end
"""

_LUA_GET = r"""
local tokens = {{{tokens}}}
local path = {path}
local prepared = {{}}
local next_one = 0

function init(args)
  for i, token in ipairs(tokens) do
    prepared[i] = wrk.format("GET", path, {{["Authorization"] = "Bearer " .. token}})
  end
end

function request()
  next_one = next_one % #prepared + 1
  return prepared[next_one]
end
"""

_LUA_FILE = r"""
local file = {file}
local path = {path}
local prepared = {{}}
local next_one = 0

function init(args)
  local n = 0
  for line in io.lines(file) do
    local signature, body = line:match("^([^\t]*)\t(.*)$")
    prepared[#prepared + 1] = wrk.format(
      "POST", path, {{["Content-Type"] = "application/json", ["Stripe-Signature"] = signature}}, body)
  end
end

function request()
  next_one = next_one + 1
  if next_one > #prepared then
    next_one = 1
    wraps = wraps + 1
  end
  return prepared[next_one]
end
"""


def lua_string(text: str) -> str:
    """A Lua string literal for plain text."""
    escaped = "".join(
        ch if 32 <= ord(ch) < 127 and ch not in '"\\' else f"\\{ord(ch):03d}" for ch in text
    )
    return f'"{escaped}"'


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "wrk is not installed: `apt-get install wrk` (make bench does it when run as root)"
        )
    return found


def run_wrk(url: str, script: str, connections: int, seconds: int) -> dict[str, Any]:
    """Run wrk for ``seconds`` with ``script``; return the script's JSON summary."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as file:
        file.write(_LUA_COMMON + script)
        file.flush()
        completed = subprocess.run(
            [
                wrk_path(),
                "-t1",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                file.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
            result["socket_errors"] = sum(result["errors"].values())
            result["non_2xx"] = sum(
                count for status, count in result["statuses"].items() if not status.startswith("2")
            )
            return result
    raise SystemExit(f"wrk failed ({completed.returncode}): {completed.stdout}{completed.stderr}")


# --- scenarios ---------------------------------------------------------------------------


def post_scenario(args: argparse.Namespace) -> dict[str, Any]:
    script = _LUA_POST.format(
        nonce=lua_string(secrets.token_hex(6)),
        path=lua_string(args.path),
        accounts=args.accounts,
        body=lua_string(SPEND_BODY),
        token=lua_string(args.token[0] if args.token else ""),
    )
    return run_wrk(args.url, script, args.connections, args.seconds)


def get_scenario(args: argparse.Namespace) -> dict[str, Any]:
    tokens = ", ".join(lua_string(token) for token in (args.token or [""]))
    script = _LUA_GET.format(tokens=tokens, path=lua_string(args.path))
    return run_wrk(args.url, script, args.connections, args.seconds)


def checkout_completed(session_id: str, account_id: str, credits: int) -> str:
    """A Stripe ``checkout.session.completed`` event for a paid session, as JSON text."""
    return json.dumps(
        {
            "id": f"evt_bench_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": session_id,
                    "object": "checkout.session",
                    "amount_subtotal": credits,
                    "amount_total": credits,
                    "client_reference_id": account_id,
                    "currency": checkouts.CURRENCY,
                    "expires_at": int(time.time()) + 3600,
                    "livemode": False,
                    "metadata": {"account_id": account_id, "credits": str(credits)},
                    "mode": "payment",
                    "payment_intent": f"pi_bench_{secrets.token_hex(10)}",
                    "payment_status": "paid",
                    "status": "complete",
                    "url": None,
                }
            },
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": "checkout.session.completed",
        }
    )


def write_deliveries(
    path: Path, count: int, prefix: str, accounts: int, secret: str, nonce: str
) -> None:
    """``count`` signed deliveries, one ``<Stripe-Signature>\\t<body>`` a line, for the
    sessions ``bench.checkouts.record_requested`` recorded under ``nonce``."""
    with path.open("w") as file:
        for session_id, account_id in checkouts.sessions(nonce, count, prefix, accounts):
            body = checkout_completed(session_id, account_id, checkouts.CREDITS)
            signature = stripe.WebhookSignature.generate_signature_header(body, secret)
            file.write(f"{signature}\t{body}\n")


def webhook_scenario(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as folder:
        deliveries = Path(folder) / "deliveries.tsv"
        started = time.perf_counter()
        write_deliveries(
            deliveries, args.count, args.accounts_prefix, args.accounts, args.secret, args.nonce
        )
        signing = time.perf_counter() - started
        script = _LUA_FILE.format(
            file=lua_string(str(deliveries)), path=lua_string("/v1/stripe/webhook")
        )
        result = run_wrk(args.url, script, args.connections, args.seconds)
    result["prepared"] = args.count
    result["signing_seconds"] = round(signing, 2)
    return result


def latency_scenario(args: argparse.Namespace) -> dict[str, Any]:
    """Spends one at a time, alternating between the given accounts' groups."""
    groups: list[list[str]] = []
    for spec in args.account:
        pattern, _, count = spec.partition(":")
        groups.append([pattern % n for n in range(int(count))] if count else [pattern])
    location = urlsplit(args.url)
    connection = http.client.HTTPConnection(location.hostname or "127.0.0.1", location.port)
    nonce = secrets.token_hex(6)
    samples: list[list[float]] = [[] for _ in groups]
    statuses: dict[str, int] = {}
    total = args.warmup + args.requests
    for n in range(total):
        for index, group in enumerate(groups):
            account_id = group[n % len(group)]
            started = time.perf_counter()
            connection.request(
                "POST",
                f"/v1/accounts/{account_id}/spend",
                body=SPEND_BODY,
                headers={
                    "Authorization": f"Bearer {args.token[0]}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": f"lat-{nonce}-{index}-{n}",
                },
            )
            response = connection.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
            if n >= args.warmup:
                samples[index].append(elapsed)
    connection.close()

    def summary(values: list[float]) -> dict[str, float]:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        return {
            "p50_ms": 1000 * cuts[49],
            "p90_ms": 1000 * cuts[89],
            "p99_ms": 1000 * cuts[98],
            "mean_ms": 1000 * statistics.fmean(values),
            "requests": len(values),
        }

    return {
        "groups": [summary(values) for values in samples],
        "statuses": statuses,
        "non_2xx": sum(c for s, c in statuses.items() if not s.startswith("2")),
    }


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Generate HTTP load (wrk for throughput, one connection for latency) and"
        " print one JSON line of results.",
    )
    sub = parser.add_subparsers(dest="scenario", required=True)

    def common(p: argparse.ArgumentParser, *, throughput: bool = True) -> None:
        p.add_argument("--url", required=True, help="the server's base URL")
        p.add_argument("--token", action="append", help="bearer token (repeat for several)")
        if throughput:
            p.add_argument("--connections", type=int, default=64, help="default 64")
            p.add_argument("--seconds", type=int, default=10, help="default 10")

    post = sub.add_parser("post", help="POST a spend body with a fresh Idempotency-Key")
    common(post)
    post.add_argument("--path", required=True, help="path; %%04d is a random account number")
    post.add_argument("--accounts", type=int, default=1000, help="accounts numbered from 0")

    hook = sub.add_parser(
        "webhook", help="signed checkout.session.completed of sessions recorded under --nonce"
    )
    common(hook)
    hook.add_argument("--accounts-prefix", default="acct_bench_")
    hook.add_argument("--accounts", type=int, default=1000)
    hook.add_argument("--count", type=int, default=50_000, help="deliveries to prepare")
    hook.add_argument(
        "--nonce", required=True, help="the sessions' (bench.checkouts.record_requested)"
    )
    hook.add_argument("--secret", default=os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_bench"))

    get = sub.add_parser("get", help="GET a path, cycling through the tokens")
    common(get)
    get.add_argument("--path", required=True)

    latency = sub.add_parser("latency", help="spends one at a time, alternating accounts")
    common(latency, throughput=False)
    latency.add_argument(
        "--account",
        action="append",
        required=True,
        help="an account id, or PATTERN:N for N accounts (e.g. acct_short_%%03d:100); repeat",
    )
    latency.add_argument("--requests", type=int, default=300, help="measured per group")
    latency.add_argument("--warmup", type=int, default=20, help="unmeasured per group")
    return parser.parse_args(argv)


SCENARIOS = {
    "post": post_scenario,
    "webhook": webhook_scenario,
    "get": get_scenario,
    "latency": latency_scenario,
}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = SCENARIOS[args.scenario](args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
