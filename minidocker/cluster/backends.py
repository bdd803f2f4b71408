"""How a node reaches its peers' pod subnets: the kernel objects the node
agent owns, converged to exactly the live peers (pyroute2: the agent is
long-running, so its import cost does not matter and its netlink coverage —
routes, neighbours, FDB, vxlan links — does).

host-gw: one route per peer, `<peer subnet> via <peer address>`; the peers
must share a link with this node (the route has no gateway of its own).
vxlan: one device `mdvx.<vni>` (addressed with the node subnet's network
address, as flannel's flannel.<vni>), and per peer a route `<peer subnet> via
<peer vtep> onlink`, a permanent neighbour entry vtep -> peer MAC and an FDB
entry peer MAC -> peer underlay address. Learning is off: the agent is the
only source of these entries.

Every route carries protocol RTPROT, so the agent finds its own and never
touches a stranger's.
"""
from __future__ import annotations

import ipaddress

from minidocker.cluster import config as cconf
from minidocker.cluster.store import NodeLease
from minidocker.errors import MinidockerError

RTPROT = 77             # our routes' protocol number (`ip route show proto 77`)
NUD_PERMANENT = 0x80


VXLAN_PREFIX = "mdvx."


def vxlan_name(vni: int) -> str:
    return f"{VXLAN_PREFIX}{vni}"


class Backend:
    """One node's data path to its peers: setup() before the first
    reconcile, teardown() its mirror image."""

    def __init__(self, cfg: cconf.ClusterConfig, me: NodeLease):
        from pyroute2 import IPRoute
        self.cfg, self.me = cfg, me
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    # --- routes we own --------------------------------------------------------
    def _our_routes(self) -> dict[str, dict]:
        out = {}
        for r in self.ipr.get_routes(family=2, proto=RTPROT):
            dst = r.get_attr("RTA_DST")
            if dst is not None:
                out[f"{dst}/{r['dst_len']}"] = r
        return out

    def _sync_routes(self, want: dict[str, dict]) -> None:
        """want: subnet -> route attributes; removes ours that are not wanted."""
        have = self._our_routes()
        for subnet, r in have.items():
            if subnet not in want:
                self.ipr.route("del", dst=subnet, proto=RTPROT, table=r.get_attr("RTA_TABLE") or 254)
        for subnet, attrs in want.items():
            r = have.get(subnet)
            if r is None or r.get_attr("RTA_GATEWAY") != attrs.get("gateway") \
                    or r.get_attr("RTA_OIF") != attrs.get("oif", r.get_attr("RTA_OIF")):
                self.ipr.route("replace", dst=subnet, proto=RTPROT, **attrs)

    def routes(self) -> list[str]:
        """`<subnet> via <gateway>` of our routes (for inspect and tests)."""
        return sorted(f"{s} via {r.get_attr('RTA_GATEWAY')}" for s, r in self._our_routes().items())

    def setup(self) -> None:
        raise NotImplementedError

    def reconcile(self, peers: list[NodeLease]) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        for subnet, r in self._our_routes().items():
            self.ipr.route("del", dst=subnet, proto=RTPROT, table=r.get_attr("RTA_TABLE") or 254)

    def describe(self) -> dict:
        return {"Backend": self.cfg.backend, "Routes": self.routes()}


class HostGw(Backend):
    def setup(self) -> None:
        return None

    def check_peer(self, peer: NodeLease) -> int:
        """The link a peer is reached on directly; refused when the kernel
        would route to it through a gateway (not on a shared link)."""
        try:
            found = self.ipr.route("get", dst=peer.public_ip)
        except Exception as exc:  # noqa: BLE001 - pyroute2's NetlinkError carries the errno
            raise MinidockerError(f"host-gw: peer {peer.name} ({peer.public_ip}) is unreachable "
                                  f"from this node: {exc}") from None
        r = found[0]
        if r.get_attr("RTA_GATEWAY"):
            raise MinidockerError(
                f"host-gw needs every node on one link: peer {peer.name} ({peer.public_ip}) is "
                f"reached through gateway {r.get_attr('RTA_GATEWAY')}; use --backend vxlan")
        return r.get_attr("RTA_OIF")

    def reconcile(self, peers: list[NodeLease]) -> None:
        """Routes to every peer on the link; one off the link is refused
        (named in the error) without holding up the routes to the others."""
        want, refused = {}, []
        for p in peers:
            try:
                want[p.subnet] = {"gateway": p.public_ip, "oif": self.check_peer(p)}
            except MinidockerError as exc:
                refused.append(exc.message)
        self._sync_routes(want)
        if refused:
            raise MinidockerError("; ".join(refused))


class Vxlan(Backend):
    @property
    def dev(self) -> str:
        return vxlan_name(self.cfg.vni)

    def _index(self) -> int | None:
        found = self.ipr.link_lookup(ifname=self.dev)
        return found[0] if found else None

    def _underlay(self) -> tuple[int, int]:
        """(ifindex, mtu) of the link holding this node's public address."""
        for a in self.ipr.get_addr(family=2):
            if a.get_attr("IFA_ADDRESS") == self.me.public_ip:
                link = self.ipr.get_links(a["index"])[0]
                return a["index"], link.get_attr("IFLA_MTU")
        raise MinidockerError(f"address {self.me.public_ip} is on no link of this node")

    def _matches(self, idx: int, under: int) -> bool:
        link = self.ipr.get_links(idx)[0]
        info = link.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info else None
        if data is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return False
        return (data.get_attr("IFLA_VXLAN_ID") == self.cfg.vni
                and data.get_attr("IFLA_VXLAN_LOCAL") == self.me.public_ip
                and data.get_attr("IFLA_VXLAN_PORT") == self.cfg.port
                and data.get_attr("IFLA_VXLAN_LINK") == under
                and link.get_attr("IFLA_ADDRESS") == self.me.vtep_mac)

    def setup(self) -> None:
        """The vxlan device as this node's lease says; an existing one is kept
        when it matches (a restarted agent), else replaced."""
        under, mtu = self._underlay()
        idx = self._index()
        if idx is not None and not self._matches(idx, under):
            self.ipr.link("del", index=idx)
            idx = None
        if idx is None:
            self.ipr.link("add", ifname=self.dev, kind="vxlan", vxlan_id=self.cfg.vni,
                          vxlan_local=self.me.public_ip, vxlan_port=self.cfg.port, vxlan_link=under,
                          vxlan_learning=0, address=self.me.vtep_mac, mtu=mtu - cconf.VXLAN_OVERHEAD)
            idx = self._index()
        vtep = cconf.vtep_address(self.me.subnet)
        if not any(a.get_attr("IFA_ADDRESS") == vtep for a in self.ipr.get_addr(index=idx)):
            self.ipr.addr("add", index=idx, address=vtep, prefixlen=32)
        self.ipr.link("set", index=idx, state="up")

    def reconcile(self, peers: list[NodeLease]) -> None:
        idx = self._index()
        if idx is None:       # deleted behind our back: make it again
            self.setup()
            idx = self._index()
        peers = [p for p in peers if p.vtep_mac]
        want_neigh = {cconf.vtep_address(p.subnet): p.vtep_mac for p in peers}
        want_fdb = {p.vtep_mac: p.public_ip for p in peers}
        for n in self.ipr.get_neighbours(ifindex=idx, family=2):
            dst, mac = n.get_attr("NDA_DST"), n.get_attr("NDA_LLADDR")
            if want_neigh.get(dst) != mac:
                self.ipr.neigh("del", ifindex=idx, dst=dst)
        have_fdb = set()
        for f in self.ipr.fdb("dump", ifindex=idx):
            mac, dst = f.get_attr("NDA_LLADDR"), f.get_attr("NDA_DST")
            if mac and mac != "00:00:00:00:00:00" and want_fdb.get(mac) != dst:
                self.ipr.fdb("del", ifindex=idx, lladdr=mac, dst=dst)
            else:
                have_fdb.add((mac, dst))
        for vtep, mac in want_neigh.items():
            self.ipr.neigh("replace", ifindex=idx, dst=vtep, lladdr=mac, state=NUD_PERMANENT)
        for mac, dst in want_fdb.items():
            if (mac, dst) not in have_fdb:   # the kernel's vxlan FDB takes no NLM_F_REPLACE here
                self.ipr.fdb("append", ifindex=idx, lladdr=mac, dst=dst)
        self._sync_routes({p.subnet: {"gateway": cconf.vtep_address(p.subnet), "oif": idx,
                                      "flags": 4}             # RTNH_F_ONLINK
                           for p in peers})

    def fdb(self) -> list[str]:
        idx = self._index()
        if idx is None:
            return []
        return sorted(f"{f.get_attr('NDA_LLADDR')} dst {f.get_attr('NDA_DST')}"
                      for f in self.ipr.fdb("dump", ifindex=idx) if f.get_attr("NDA_DST"))

    def teardown(self) -> None:
        super().teardown()
        idx = self._index()
        if idx is not None:
            self.ipr.link("del", index=idx)     # its FDB and neighbour entries go with it

    def describe(self) -> dict:
        return {**super().describe(), "Device": self.dev if self._index() else "", "FDB": self.fdb()}


def make(cfg: cconf.ClusterConfig, me: NodeLease) -> Backend:
    return {"host-gw": HostGw, "vxlan": Vxlan}[cfg.backend](cfg, me)


def host_routes_overlapping(cidr: str, own_bridge: str | None = None) -> list[str]:
    """Routes of the main table inside or around the cluster range that are
    not ours: another network already uses those addresses."""
    from pyroute2 import IPRoute
    net = ipaddress.ip_network(cidr)
    out = []
    with IPRoute() as ipr:
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in ipr.get_links()}
        for r in ipr.get_routes(family=2, table=254):
            dst = r.get_attr("RTA_DST")
            if dst is None or r["proto"] == RTPROT:
                continue
            other = ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False)
            dev = names.get(r.get_attr("RTA_OIF"), "?")
            if other.overlaps(net) and dev != own_bridge and not dev.startswith(VXLAN_PREFIX):
                out.append(f"{other} dev {dev}")
    return out

