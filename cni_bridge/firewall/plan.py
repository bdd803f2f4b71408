"""The firewall's plan: the rules of one attachment as data (`plan`), the
names they use on the host, the Driver interface each backend implements,
and the lock they share. The backends render it; nothing here runs a tool.
Chain and table names live here and nowhere else."""
from __future__ import annotations

import posix   # os's functions without importing os (~1.2 ms): HACKING.md

from cni.portmap import PortMapping

# --- names on the host (one place) ------------------------------------------------
CHAIN_DNAT = "MINIDOCKER"                  # nat: DNAT of published ports
CHAIN_POSTROUTING = "MINIDOCKER-POSTROUTING"  # nat: masquerade
CHAIN_FORWARD = "MINIDOCKER-FORWARD"       # filter: accept to/from containers
CHAIN_POLICY = "MINIDOCKER-POLICY"         # filter: per-container drops, new connections only
CHAIN_ISOLATION = "MINIDOCKER-ISOLATION"   # filter: drops between isolated networks' bridges
NFT_TABLE = "minidocker"                   # `table ip minidocker`, `table ip6 minidocker`
NFT_CHAINS = {  # nft chain -> its base-chain declaration
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "forward": "type filter hook forward priority filter; policy accept;",
    "isolation": None,  # a regular chain: jumped to from forward
}
#: the packet-mark bit iptables sets on a connection's first packet while it
#: is DNAT'ed to a published port, so that one rule per network masquerades
#: its same-bridge clients (the pattern and bit of kube-proxy's 0x4000, one
#: bit lower: services keep 0x4000). Cleared again when no port matched.
PUBLISHED_MARK = 0x2000
COMMENT_PREFIX = "md/"
SCAFFOLD_COMMENT = "minidocker"
BACKENDS = ("iptables", "nftables")
_IFNAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@+=-"


class Attachment:
    """What the rules of one (network, container, ifname) are made from.
    A plain class, not a dataclass: `dataclasses` imports `inspect` (~5 ms),
    paid by every exec of the plugin."""

    def __init__(self, network: str, container_id: str, ifname: str, bridge: str, *,
                 addrs: list[tuple[str, str]] | None = None, ip_masq: bool = False,
                 no_masq_to: list[str] | None = None, port_mappings: list[PortMapping] | None = None,
                 isolation: bool = False, internal: bool = False, icc: bool = True):
        self.network, self.container_id, self.ifname, self.bridge = network, container_id, ifname, bridge
        self.addrs = list(addrs or [])              # (ip, subnet cidr)
        self.ip_masq = ip_masq
        self.no_masq_to = list(no_masq_to or [])    # destinations kept unmasqueraded (a cluster's range)
        self.port_mappings = list(port_mappings or [])
        self.isolation = isolation   # no traffic to other isolated networks' bridges
        self.internal = internal     # no traffic between the bridge and anything else
        self.icc = icc               # container-to-container traffic on the bridge

    def __eq__(self, other) -> bool:
        return isinstance(other, Attachment) and self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        return f"Attachment({self.__dict__!r})"

    @property
    def comment(self) -> str:
        return owner_comment(self.network, self.container_id, self.ifname)

    def families(self) -> set[int]:
        return {6 if ":" in ip else 4 for ip, _ in self.addrs}


def _short(value: str, keep: int) -> str:
    if len(value) <= keep:
        return value
    import hashlib
    return value[:keep - 9] + "~" + hashlib.sha1(value.encode()).hexdigest()[:8]


def network_prefix(network: str) -> str:
    return f"{COMMENT_PREFIX}{_short(network, 40)}/"


def owner_comment(network: str, cid: str, ifname: str) -> str:
    """`md/<network>/<container>/<ifname>`, at most 128 bytes (nft's limit);
    over-long parts are shortened with a hash, odd interface names hex-encoded."""
    if not ifname or ifname.strip(_IFNAME_CHARS):   # (not `re`: ~5 ms of a plugin's start)
        ifname = "~" + ifname.encode().hex()[:14]
    return f"{network_prefix(network)}{_short(cid, 64)}/{ifname}"


def plan(att: Attachment) -> list[tuple]:
    """The attachment's own rules, backend-neutral:
    ("masq", fam, ip, subnet)            outbound masquerade (ipMasq)
    ("masq_skip", fam, ip, cidr)         ...except towards cidr (nonMasqueradeCIDRs:
                                         pod-to-pod traffic across nodes keeps its address)
    ("dnat", fam, proto, hostip, hport, ip, cport)   publish a port
    ("pm_masq", fam, proto, subnet, ip, cport)       same-bridge/hairpin clients
    ("pm_local", 4, proto, ip, cport)                 clients on the host's 127/8
    ("iso", fam, ip, bridge)     from ip out of its bridge, not DNAT'ed: to the
                                 isolation chain (dropped there towards the
                                 bridge of another isolated network)
    ("icc", fam, ip, bridge)     from ip to its own bridge, not DNAT'ed: drop
    ("int_out", fam, ip, bridge) / ("int_in", ...)    internal: drop from ip
                                 leaving its bridge, and to ip from elsewhere
    Published ports keep working across networks and with icc off: DNAT'ed
    connections are exempt (the exemption follows the connection both ways).
    """
    out: list[tuple] = []
    for ip, subnet in att.addrs:
        fam = 6 if ":" in ip else 4
        if att.internal:
            out.append(("int_out", fam, ip, att.bridge))
            out.append(("int_in", fam, ip, att.bridge))
        elif att.isolation:
            out.append(("iso", fam, ip, att.bridge))
        if not att.icc:
            out.append(("icc", fam, ip, att.bridge))
        if att.ip_masq:
            out.extend(("masq_skip", fam, ip, cidr) for cidr in att.no_masq_to
                       if (":" in cidr) == (fam == 6))
            out.append(("masq", fam, ip, subnet))
        for pm in att.port_mappings:
            if pm.family not in (None, fam):
                continue
            out.append(("dnat", fam, pm.protocol, pm.host_ip, pm.host_port, ip, pm.container_port))
            out.append(("pm_masq", fam, pm.protocol, subnet, ip, pm.container_port))
            if fam == 4 and pm.host_ip in ("", "127.0.0.1", "0.0.0.0"):
                out.append(("pm_local", 4, pm.protocol, ip, pm.container_port))
    return out


def _subnets(att: Attachment) -> list[tuple[int, str]]:
    """(family, subnet) of each of the attachment's subnets, once each."""
    out: list[tuple[int, str]] = []
    for ip, subnet in att.addrs:
        if (6 if ":" in ip else 4, subnet) not in out:
            out.append((6 if ":" in ip else 4, subnet))
    return out


def network_plan(att: Attachment) -> list[tuple]:
    """Rules the network's attachments share, kept while any attachment of
    the network has rules: ("fwd", fam, subnet, bridge) accepts forwarding
    to and from the subnet on its bridge (hosts whose FORWARD policy is DROP).
    Sharing them keeps DEL to one rule commit (~14 ms each) per family."""
    return [("fwd", fam, subnet, att.bridge) for fam, subnet in _subnets(att)]


def published_plan(att: Attachment) -> list[tuple]:
    """The network's shared masquerade of published-port clients, for a
    backend that cannot look them up per element (iptables): what pm_masq
    and pm_local do per port, done once per network and family:
    ("pm_masq_net", fam, subnet, bridge)  DNAT'ed to a published port (the
                                          connection carries PUBLISHED_MARK)
                                          from the bridge's own subnet
    ("pm_local_net", 4, bridge)           from the host's 127/8 to the bridge
    Present while the network has rules; iptables-nft's `-D` compares the
    rule with every rule of its chain, so per-port rules made each DEL
    slower with every container."""
    out = [("pm_masq_net", fam, subnet, att.bridge) for fam, subnet in _subnets(att)]
    return out + [("pm_local_net", 4, att.bridge)] if 4 in att.families() else out


def isolation_plan(att: Attachment) -> list[tuple]:
    """The network's shared isolation rule, one per family: ("iso_net", fam,
    bridge) drops, in the isolation chain, whatever another isolated
    network sends towards this bridge. Always present while the network
    has rules (unlike the forward accepts)."""
    if not att.isolation or att.internal:
        return []
    return [("iso_net", fam, att.bridge) for fam in sorted(att.families())]


class Pending:
    """Rule tools started but not yet waited for; holds the firewall lock
    until `wait()` so that the kernel's commit overlaps the plugin's netlink
    work instead of following it."""

    def __init__(self, lock, procs=(), after=None):
        self.lock, self.procs, self.after = lock, list(procs), after

    def wait(self) -> None:
        try:
            for p in self.procs:
                p.check()
            if self.after:
                self.after()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None


class Early:
    """What a driver's `begin` started before the attachment was known: the
    firewall lock, held, and reads under way (family -> Proc). `setup`
    takes both over; `release()` ends them when no setup came (a failed
    IPAM) and is harmless after one."""

    def __init__(self, lock, reads=None):
        self.lock, self.reads = lock, dict(reads or {})

    def release(self) -> None:
        try:
            for p in self.reads.values():
                p.wait()
        finally:
            self.lock.release()


class Driver:
    """The interface both backends implement."""

    name = ""

    def begin(self, network: str, families) -> Early | None:
        """ADD's first step, before IPAM: start what `setup` will need that
        does not depend on the addresses, so it overlaps the allocation.
        Callers take no other firewall Lock until `setup` or `release()`."""
        return None

    def setup(self, att: Attachment, repair: bool = False, early: Early | None = None) -> Pending:
        """setup_network + setup_port_forward as ONE atomic batch (per family
        for iptables): the attachment's rules, and the network's shared rules
        and our chains when missing (`repair`, `network reload`: the index is
        not trusted to say what exists; the tables are read). `early`: what
        `begin` started for this attachment."""
        raise NotImplementedError

    def teardown(self, network: str, keep=None, owner: str | None = None,
                 families=(4, 6)) -> Pending:
        """Remove the rules of `owner` (a comment), or with `keep` (a set of
        comments) every attachment rule of `network` not in it (GC); then the
        network's shared rules and our chains if nothing uses them."""
        raise NotImplementedError

    def commit_tools(self, families) -> list[list[str]]:
        """The tools `setup` hands its batches to (argv each), so that ADD
        can start them before the batches are known (proc.start_early)."""
        return []

    def owned(self, families=(4, 6)) -> dict[str, int]:
        """comment -> number of rules (or set elements) carrying it (CHECK)."""
        raise NotImplementedError

    def count(self, att: Attachment) -> int:
        """How many rules (or elements) carry the attachment's comment once
        it is set up: one per plan entry (the network's shared forward rules
        exist only where FORWARD can drop, so CHECK does not count them)."""
        return len(plan(att))

    def rules(self, families=(4, 6)) -> list[dict]:
        """Every commented rule of ours as {"backend", "family", "table",
        "chain", "handle", "comment", "text"}: a read-only view for `network
        inspect`, `network diagram` and `trace` (the handle is the one an nft
        trace event names; 0 when unknown)."""
        raise NotImplementedError

    def listing(self, families=(4, 6)) -> list[tuple[str, str]]:
        """(owner comment, the rule as a person would type it) of every
        attachment's or network's rule."""
        return [(r["comment"], r["text"]) for r in self.rules(families)
                if r["comment"].startswith(COMMENT_PREFIX)]

    def scaffold_intact(self, families=(4, 6)) -> bool:
        """Our chains and the jumps into them are all there (a re-apply
        after a flush needs them back)."""
        return True

    # netavark's names, for readers who know that interface.
    def setup_network(self, att: Attachment) -> None:
        self.setup(Attachment(**{**att.__dict__, "port_mappings": []})).wait()

    def setup_port_forward(self, att: Attachment) -> None:
        self.setup(att).wait()

    def teardown_network(self, att: Attachment) -> None:
        self.teardown(att.network, owner=att.comment, families=att.families() or (4, 6)).wait()

    teardown_port_forward = teardown_network


def decide(comment: str | None, prefix: str, owner: str | None, keep) -> str:
    """What teardown does with a rule: "drop", "net" (a shared rule of the
    network), "keep"."""
    if comment is None or not comment.startswith(prefix):
        return "keep"
    if comment == prefix:
        return "net"
    if owner is not None:
        return "drop" if comment == owner else "keep"
    return "drop" if keep is not None and comment not in keep else "keep"


def lock_path() -> str:
    """One lock per network namespace: rule changes of concurrent plugins
    (ADD, DEL, GC) are read-modify-write and must not interleave."""
    from cni.env import environ
    from cni_bridge.files import makedirs
    ino = posix.stat("/proc/self/ns/net").st_ino
    base = environ().get("MINIDOCKER_RUN", "/run/minidocker") + "/cni-bridge"
    makedirs(base, 0o700)
    return f"{base}/firewall-{ino}.lock"


class Lock:
    def __init__(self):
        import fcntl
        self.fd = posix.open(lock_path(), posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1
