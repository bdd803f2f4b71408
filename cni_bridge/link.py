"""Links of an attachment: the bridge with its gateway addresses, a veth pair
born directly inside the container's namespace, addresses, routes, sysctls.

The host end has a name derived from (network, container, ifname) and an
alias naming them, so DEL can find and delete it without entering the
container's namespace (which may be gone) and never deletes a stranger.
"""
from __future__ import annotations

import posix   # os's functions without importing os (~1.2 ms): HACKING.md
from binascii import crc32

from cni_bridge.errors import CNIError, INVALID_ENVIRONMENT, failure
from cni_bridge.files import is_dir
from cni_bridge import netlink as nlm
from cni_bridge.netlink import Netlink, NetlinkError


def host_veth_name(network: str, cid: str, ifname: str) -> str:
    return "veth%08x" % crc32(f"{network}/{cid}/{ifname}".encode())


def veth_alias(network: str, cid: str, ifname: str) -> str:
    return f"minidocker/{network}/{cid}/{ifname}"[:255]


def sysctl(path: str, value: str) -> None:
    """Write /proc/sys/<path> (in the caller's netns) unless already set."""
    full = "/proc/sys/" + path
    try:
        with open(full) as fh:
            if fh.read().strip() == value:
                return
        with open(full, "w") as fh:
            fh.write(value)
    except OSError as err:
        raise failure(f"failed to set {path.replace('/', '.')}={value}: {err.strerror}") from None


def quiet_ipv6(netns_fd: int, ifname: str, has_ipv6: bool) -> None:
    """Before the container's interface goes up: no IPv6 on it when the
    attachment has no IPv6 address (Docker 20.10 does the same), and no
    router solicitations when it has one (its addresses and routes are
    static). The kernel repeats a solicitation with backoff for an hour
    and the bridge floods each to every port, through every port's
    firewall hooks: with 500 containers ~5 a second, 2,500 copies, which
    slowed every new connection on the machine (README, "Scale")."""
    key, value = ("router_solicitations", "0") if has_ipv6 else ("disable_ipv6", "1")
    with nlm.InNetns(netns_fd):
        if is_dir(f"/proc/sys/net/ipv6/conf/{ifname}"):   # not when IPv6 is off at boot
            sysctl(f"net/ipv6/conf/{ifname}/{key}", value)


def open_netns(path: str) -> int:
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError as err:
        raise CNIError(INVALID_ENVIRONMENT, f"failed to open netns {path!r}: {err.strerror}") from None
    return fd


def random_mac() -> str:
    """A random locally administered unicast MAC. A bridge given its own
    address keeps it; without one it takes the lowest of its ports' and
    changes as containers come and go, so every neighbour's cached gateway
    MAC goes stale and traffic stalls until ARP gives up on it (~25 s).
    Docker sets a random bridge MAC for the same reason."""
    b = bytearray(posix.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def ensure_bridge(nl: Netlink, name: str, mtu: int, promisc: bool) -> tuple[dict, bool]:
    """The bridge, created and up if missing; (link, created)."""
    link = nl.link(name)
    created = False
    if link is None:
        try:
            nl.add_bridge(name, mtu=mtu, up=False, promisc=promisc, mac=random_mac())
            created = True
        except NetlinkError as err:
            if err.errno != 17:  # EEXIST: a concurrent ADD made it first
                raise failure(f"could not add bridge {name!r}: {err.strerror}") from None
        if created:
            # No DAD on the bridge: while its link-local address is tentative
            # the node cannot send neighbour solicitations on it for packets
            # from other interfaces (DNAT from the uplink, the node's own
            # address), so the first IPv6 connections would stall ~1-2 s.
            try:
                sysctl(f"net/ipv6/conf/{name}/accept_dad", "0")
            except CNIError:
                pass  # IPv6 disabled: nothing to stall
        link = nl.link(name)
        if link is None:
            raise failure(f"bridge {name!r} vanished while being set up")
    if link["kind"] != "bridge":
        raise CNIError(7, f"{name!r} already exists but is not a bridge")
    want_up = not link["flags"] & nlm.IFF_UP
    want_promisc = promisc and not link["flags"] & nlm.IFF_PROMISC
    if want_up or want_promisc:
        nl.set_link(link["index"], up=True, promisc=True if want_promisc else None)
    return link, created


def ensure_gateways(nl: Netlink, bridge: dict, gateways: list[tuple[str, int]], force: bool) -> None:
    """Gateway addresses on the bridge, as the reference bridge decides: an
    IPv4 bridge holds one address (replace it only with forceAddress); IPv6
    addresses may coexist unless their subnets overlap. The gateways of one
    attachment (several range sets) never conflict with each other."""
    from cni import ipaddr
    existing = nl.addrs(bridge["index"])
    ours = {ipaddr.ip_interface(f"{gw}/{plen}") for gw, plen in gateways}
    for gw, plen in gateways:
        want = ipaddr.ip_interface(f"{gw}/{plen}")
        present = False
        for ip, p in existing:
            have = ipaddr.ip_interface(f"{ip}/{p}")
            if have.version != want.version or have.is_link_local:
                continue
            if have == want:
                present = True
                break
            if have in ours:  # another gateway of this same attachment
                continue
            if want.version == 4 or have.ip in want.network or want.ip in have.network:
                if not force:
                    raise CNIError(7, f"{bridge['name']!r} already has an IP address different from {want}")
                nl.del_addr(bridge["index"], ip, p)
        if not present:
            nl.add_addr(bridge["index"], gw, plen, exist_ok=True)


def add_veth(nl: Netlink, netns_fd: int, host: str, ifname: str, mtu: int, bridge: dict,
             mac: str, alias: str, hairpin: bool) -> dict:
    try:
        nl.add_veth(host, ifname, netns_fd, mtu=mtu, master=bridge["index"], peer_mac=mac)
    except NetlinkError as err:
        if err.errno == 17:
            raise CNIError(INVALID_ENVIRONMENT, f"host veth name {host!r} or container interface "
                           f"{ifname!r} already exists") from None
        raise failure(f"failed to create veth pair {host}/{ifname}: {err.strerror}") from None
    link = nl.link(host)
    nl.set_link(link["index"], alias=alias)
    if hairpin:
        nl.set_hairpin(link["index"], True)
    return link


class BridgeLock:
    """flock per bridge (and network namespace): ADD holds it shared from
    making the bridge until its veth is on it; a DEL that removes an idle
    bridge holds it alone, so it never deletes a bridge an ADD is using."""

    def __init__(self, bridge: str, exclusive: bool):
        import fcntl
        from cni_bridge.firewall import lock_path
        path = lock_path().replace("firewall-", f"bridge-{bridge}-")
        self.fd = posix.open(path, posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        posix.close(self.fd)


def _idle_bridge(nl: Netlink, bridge: str, but: int = 0) -> dict | None:
    """The bridge when no port but `but` is on it, else None."""
    br = nl.link(bridge)
    if br is None or br["kind"] != "bridge":
        return None
    if nlm.has_port(br["index"], but):
        return None
    return br


def _drop_if_idle(nl: Netlink, bridge: str, veth: int = 0) -> bool:
    """THE deletion of a bridge (callers hold its lock alone): when no port
    but `veth` is on it, the bridge and that veth go in one kernel batch."""
    br = _idle_bridge(nl, bridge, but=veth)
    if br is None:
        return False
    nl.del_links(([veth] if veth else []) + [br["index"]])
    return True


def delete_idle_bridge(bridge: str) -> bool:
    """The bridge if no port is on it (a failed ADD that made it, GC)."""
    with BridgeLock(bridge, exclusive=True), Netlink() as nl:
        return _drop_if_idle(nl, bridge)


def delete_attachment(network: str, cid: str, ifname: str, netns_path: str,
                      idle_bridge: str = "") -> bool:
    """Delete the veth pair (either end takes the other along). True when
    something was deleted; missing links and namespaces are fine (P5).
    With idle_bridge: that bridge too when this veth was its last port, in
    one kernel batch with the veth (removeIdleBridge)."""
    if idle_bridge:
        with BridgeLock(idle_bridge, exclusive=True), Netlink() as nl:
            link = nl.link(host_veth_name(network, cid, ifname))
            ours = link is not None and link["alias"] == veth_alias(network, cid, ifname)
            if _drop_if_idle(nl, idle_bridge, veth=link["index"] if ours else 0):
                return True
    with Netlink() as nl:
        link = nl.link(host_veth_name(network, cid, ifname))
        if link is not None and link["alias"] == veth_alias(network, cid, ifname):
            return nl.del_link(link["index"])
    if not netns_path:
        return False
    try:
        fd = posix.open(netns_path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return False
    try:
        cnl = nlm.netlink_in(fd)
    except OSError:
        posix.close(fd)
        return False
    posix.close(fd)
    with cnl:
        link = cnl.link(ifname)
        if link is not None and link["kind"] == "veth":
            return cnl.del_link(link["index"])
    return False


def stale_veths(network: str, valid: set[tuple[str, str]]) -> int:
    """GC: delete host veths of `network` whose attachment is not valid."""
    prefix = f"minidocker/{network}/"
    n = 0
    with Netlink() as nl:
        for link in nl.links():
            alias = link["alias"]
            if link["kind"] == "veth" and alias.startswith(prefix):
                cid, _, ifname = alias[len(prefix):].rpartition("/")
                if (cid, ifname) not in valid:
                    n += nl.del_link(link["index"])
    return n
