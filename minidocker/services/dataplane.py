"""Which renderer programs a service (the firewall backend it was created
with, MINIDOCKER_FIREWALL), and the conntrack clean-up kube-proxy does when a
UDP endpoint goes: UDP has no connection end, so without it a client keeps
sending to the gone endpoint for as long as its entry lives."""
from __future__ import annotations

import os
import subprocess

from minidocker.errors import MinidockerError
from minidocker.network.driver import FIREWALL_BACKENDS, FIREWALL_ENV
from minidocker.services import plan as P


def backend() -> str:
    name = os.environ.get(FIREWALL_ENV) or "iptables"
    if name not in FIREWALL_BACKENDS:
        raise MinidockerError(f"invalid {FIREWALL_ENV}={name!r}: accepted are "
                              f"{', '.join(FIREWALL_BACKENDS)}")
    return name


def _renderer(name: str):
    if name == "nftables":
        from minidocker.services import nft
        return nft
    from minidocker.services import iptables
    return iptables


def _plans(others: list[dict], name: str, skip: str) -> list[dict]:
    return [o["Programmed"] for o in others
            if o.get("Backend") == name and o.get("Programmed") and o["Name"] != skip]


def program(svc: dict, others: list[dict]) -> None:
    """Bring the kernel from the service's programmed plan to its current
    one (svc["Programmed"] follows); others: every other service record."""
    name = svc["Backend"]
    new = P.plan(svc, name)
    _renderer(name).apply(svc.get("Programmed"), new, _plans(others, name, svc["Name"]) + [new])
    svc["Programmed"] = new


def unprogram(svc: dict, others: list[dict]) -> None:
    """Remove the service's rules; the scaffold goes with the backend's last service."""
    name = svc["Backend"]
    renderer = _renderer(name)
    if svc.get("Programmed"):
        renderer.apply(svc["Programmed"], None, _plans(others, name, svc["Name"]))
    if not any(o.get("Backend") == name and o["Name"] != svc["Name"] for o in others):
        renderer.drop()
    svc["Programmed"] = None


def program_new(services: list[dict]) -> None:
    """Program services none of which is in the kernel yet, one transaction
    per backend (loading many at once: the benchmark)."""
    for name in sorted({s["Backend"] for s in services}):
        mine = [s for s in services if s["Backend"] == name]
        for s in mine:
            s["Programmed"] = P.plan(s, name)
        _renderer(name).bulk([s["Programmed"] for s in mine])


def rules(svc: dict) -> list[str]:
    return _renderer(svc["Backend"]).rules(svc.get("Programmed"))


def forget_udp(svc: dict, gone: set[str]) -> None:
    """Delete the conntrack entries of UDP flows DNATed to endpoints that went."""
    for port in svc["Ports"]:
        if port["Protocol"] != "udp":
            continue
        for ip in sorted(gone):
            matches = [["--orig-dst", svc["ClusterIP"], "--orig-port-dst", str(port["Port"])]]
            if port.get("NodePort"):
                matches.append(["--orig-port-dst", str(port["NodePort"])])
            for match in matches:
                try:   # exit 1: no such entry, nothing to do
                    subprocess.run(["conntrack", "-D", "-p", "udp", *match, "--reply-src", ip],
                                   capture_output=True, timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
