"""nginx in front of the API replicas, with ``deploy/nginx.conf`` as it is.

That file is written for Docker: its DNS (``resolver 127.0.0.11``) answers the
name ``api`` with every replica. Here nothing answers that name, so exactly
what must differ is replaced, and each replacement must find its line once
(a change to the file's shape fails loudly instead of running something else):

* the resolver line goes: an ``upstream api`` block lists the replicas instead
  (``proxy_pass $api`` finds a declared upstream by name before asking DNS);
* ``set $api http://api:8000;`` loses the port, which names that block;
* ``listen 8000;`` becomes the address given;
* the process's own files (pid, logs, temporary bodies) go to the run's folder.

Everything else (``proxy_next_upstream``, headers, body limit) is the file's.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "nginx.conf"


class NginxUnavailable(RuntimeError):
    """No nginx program here."""


def find_nginx() -> str | None:
    """The nginx program (Debian's /usr/sbin/nginx), or None."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    found = re.findall(pattern, text, flags=re.MULTILINE)
    if len(found) != 1:
        raise ValueError(
            f"deploy/nginx.conf: expected one line matching {pattern!r}, found {len(found)}"
        )
    return re.sub(pattern, lambda _: replacement, text, flags=re.MULTILINE)


# Sends each account's requests to one replica (consistent hashing): its aggregate stays
# in that replica's cache and its commands take turns there, instead of conflicting with
# another replica's in the database. The account is in the path (internal services) or
# bound to the customer's token.
BY_ACCOUNT = """    map $uri $ledger_account {
        ~^/v1/accounts/(?<account>[^/]+) $account;
        default $http_authorization;
    }
"""


# nginx's default (max_fails=1 fail_timeout=10s) takes a replica out for 10 s after one
# refused connection, as every graceful stop gives: a rolling restart, one replica at a
# time, each answering before the next stops, had every replica out at once and answered
# 502 "no live upstreams" to every request for seconds. Out for 1 s, a replica that is
# back is tried again at once; one still down costs a request a refused connection.
SERVER_PARAMETERS = "max_fails=1 fail_timeout=1s"

# Idle connections to a replica are closed by nginx, before the replica's own keep-alive
# time (uvicorn's 5 s) ends: a connection the replica closes may be the one nginx has just
# sent a request on, and nginx answers that POST 502 rather than send it on.
UPSTREAM_IDLE = "2s"


def render(
    template: str, replicas: list[str], listen: str, folder: Path, *, by_account: bool = False
) -> str:
    """``template`` (deploy/nginx.conf) for replicas at ``host:port`` and nginx at ``listen``
    (``by_account``: see BY_ACCOUNT; otherwise round robin, as Docker's DNS does)."""
    servers = "".join(f"        server {replica} {SERVER_PARAMETERS};\n" for replica in replicas)
    upstream = (
        "    # ledger dev cluster: the replicas, in place of Docker's DNS\n"
        + (BY_ACCOUNT if by_account else "")
        + "    upstream api {\n"
        + ("        hash $ledger_account consistent;\n" if by_account else "")
        + f"{servers}"
        "        keepalive 32;\n"
        f"        keepalive_timeout {UPSTREAM_IDLE};\n"
        "    }\n"
        f"    access_log {folder / 'nginx-access.log'};\n"
        f"    client_body_temp_path {folder / 'nginx-body'};\n"
        f"    proxy_temp_path {folder / 'nginx-proxy'};\n"
    )
    text = _replace_once(template, r"^\s*resolver [^;]*;\n", upstream)
    text = _replace_once(text, r"set \$api http://api:8000;", "set $api http://api;")
    text = _replace_once(text, r"listen 8000;", f"listen {listen};")
    return text


def prepare(
    replicas: list[str], listen: str, folder: Path, *, by_account: bool = False
) -> list[str]:
    """Write the configuration into ``folder``; the command that runs nginx on it, in the
    foreground."""
    program = find_nginx()
    if program is None:
        raise NginxUnavailable(
            "no nginx: `make nginx` installs Debian's package (apt-get install nginx)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for temporary in ("nginx-body", "nginx-proxy"):
        (folder / temporary).mkdir(exist_ok=True)
        # nginx's workers run as nobody when started as root.
        (folder / temporary).chmod(0o777)
    config = folder / "nginx.conf"
    config.write_text(render(TEMPLATE.read_text(), replicas, listen, folder, by_account=by_account))
    return [
        program,
        "-p",
        str(folder),
        "-c",
        str(config),
        "-e",
        str(folder / "nginx-error.log"),
        "-g",
        f"daemon off; pid {folder / 'nginx.pid'};",
    ]
