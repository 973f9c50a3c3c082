"""Test hosts on a private network: Linux network namespaces joined by a bridge.

Each host is a namespace with one end of a veth pair (the other end on the
bridge) and an address on a /24 of 10.0.0.0/8 that no interface of the machine
uses. The bridge has the network's first address, so this machine (the tests)
reaches every host; traffic between hosts crosses the bridge, and
``cut(host)`` takes a host's link down as a pulled cable would (packets are
dropped, connections hang rather than fail). ``close()`` removes all of it.

Needs root and ``ip netns``; ``available()`` says whether they work here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass


class NetworkUnavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no ``ip``, or refused)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)  # noqa: S603, S607
    if check and done.returncode != 0:
        raise NetworkUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def available() -> str | None:
    """None when namespaces work here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no ip command (iproute2)"
    probe = f"ledger-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except NetworkUnavailable as error:
        return str(error)
    _ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that overlaps no address or route of this machine."""
    used = []
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word[:1].isdigit():
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(word, strict=False))
    for line in _ip("-4", "-o", "addr").stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            used.append(ipaddress.ip_network(parts[parts.index("inet") + 1], strict=False))
    for _ in range(100):
        candidate = ipaddress.IPv4Network(
            f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(254) + 1}.0/24"
        )
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise NetworkUnavailable("no free 10.x.y.0/24 for a test network")


@dataclass(frozen=True)
class Host:
    """A namespace on the network, with its address."""

    name: str
    namespace: str
    address: str
    link: str
    """The veth end on the bridge (this machine's side): down = cut off."""

    def exec_prefix(self) -> list[str]:
        """Put before a command to run it on this host."""
        return ["ip", "netns", "exec", self.namespace]


class Network:
    """A bridge and its hosts (see the module); a context manager that removes them."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)
        self.subnet = _free_subnet()
        addresses = self.subnet.hosts()
        self.gateway = str(next(addresses))
        self._addresses = addresses
        self.bridge = f"lcb{self.tag}"
        self.hosts: dict[str, Host] = {}
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def add_host(self, name: str) -> Host:
        """A new namespace with an address on the network (and its own loopback)."""
        number = len(self.hosts) + 1
        namespace = f"ledger-{self.tag}-{name}"
        outside, inside = f"lcv{self.tag}{number}", f"lci{self.tag}{number}"
        address = str(next(self._addresses))
        _ip("netns", "add", namespace)
        host = Host(name, namespace, address, outside)
        self.hosts[name] = host
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        prefix = host.exec_prefix()
        for command in (
            ["addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", inside],
            ["link", "set", inside, "up"],
            ["link", "set", "lo", "up"],
        ):
            done = subprocess.run([*prefix, "ip", *command], capture_output=True, text=True, check=False)  # noqa: S603
            if done.returncode != 0:
                raise NetworkUnavailable(f"{' '.join(command)} in {namespace}: {done.stderr}")
        return host

    def cut(self, host: Host) -> None:
        """Take the host off the network: its packets are dropped, nothing is refused."""
        _ip("link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def close(self) -> None:
        """Remove every namespace and link this network made (processes in them: the caller's)."""
        for host in self.hosts.values():
            _ip("link", "del", host.link, check=False)
            _ip("netns", "del", host.namespace, check=False)
        self.hosts = {}
        _ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def cidr(self) -> str:
        return str(self.subnet)
