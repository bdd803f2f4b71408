"""cni-bridge: ADD / DEL / CHECK / GC / STATUS (VERSION and the protocol's
envelope are cni.skel's job). Start-up matters (a runtime execs the plugin
for every container), so this module imports only what every command
needs; netlink, the firewall backends and IPAM are loaded on use."""
from __future__ import annotations

import posix   # os's functions without importing os (~1.2 ms): HACKING.md

from cni import skel
from cni.env import PluginArgs
from cni.errors import CNIError, INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, PLUGIN_FAILURE

ABOUT = "cni-bridge: minidocker's CNI bridge plugin (bridge, veth, host-local IPAM, masquerade, port maps)"
VALID_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


def _ipam(c: bconfig.BridgeConf, args: PluginArgs, env_args=True, parse=True):
    if c.builtin_ipam:
        from cni_bridge.ipam import Builtin
        return Builtin(c.raw, args.args if env_args else [], c.network, parse=parse)
    from cni_bridge.ipam.delegate import Delegate
    return Delegate(c.ipam_type, args, args.stdin, c.cni_version)


def attachment(c: bconfig.BridgeConf, cid: str, ifname: str, ips) -> "firewall.Attachment":
    from cni import ipaddr
    from cni_bridge.firewall import Attachment
    addrs = [(str(i.ip), str(i.network)) for i in (ipaddr.ip_interface(x.address) for x in ips)]
    return Attachment(network=c.network, container_id=cid, ifname=ifname, bridge=c.bridge,
                      addrs=addrs, ip_masq=c.ip_masq, no_masq_to=c.no_masq_to, port_mappings=c.port_mappings,
                      isolation=c.isolation, internal=c.internal, icc=c.icc)


def needs_firewall(c: bconfig.BridgeConf) -> bool:
    return c.ip_masq or bool(c.port_mappings) or c.isolation or c.internal or not c.icc


# --- ADD ------------------------------------------------------------------------
def cmd_add(args: PluginArgs, conf: dict):
    from cni_bridge import config as bconfig  # not for VERSION: its dataclasses cost ~5 ms
    c = bconfig.parse(conf, args)
    from cni_bridge import proc
    early = None
    try:
        if needs_firewall(c) and c.builtin_ipam:
            # Before IPAM (the families are the config's ranges): the rule
            # tools start and load, and the firewall lock is taken with any
            # read the batch needs under way; the batch itself, which needs
            # the addresses, is handed over in _setup.
            from cni_bridge import firewall
            drv = firewall.driver(c.firewall)
            early = drv.begin(c.network, _families(c))
            for argv in drv.commit_tools(_families(c), early, publishes=bool(c.port_mappings)):
                proc.start_early(argv)
        return _add(c, args, early)
    finally:
        if early is not None:
            early.release()
        proc.drop_spares()


def _add(c: bconfig.BridgeConf, args: PluginArgs, early=None):
    ipam = _ipam(c, args)
    from cni_bridge import link, netlink, netns
    fd = link.open_netns(args.netns)
    try:
        try:
            cnl = netns.netlink_in(fd)
        except OSError as err:
            raise CNIError(INVALID_ENVIRONMENT, f"{args.netns!r} is not a network namespace: {err}") from None
        with cnl, netlink.Netlink() as nl:
            if cnl.link(args.ifname) is not None:
                raise CNIError(INVALID_ENVIRONMENT, f"container veth name provided ({args.ifname}) already exists")
            ipam_result = ipam.add(args.container_id, args.ifname)
            state = {"bridge_created": False, "firewall": None, "early": early}
            try:
                if not ipam_result.ips:
                    raise CNIError(PLUGIN_FAILURE, "IPAM plugin returned missing IP config")
                result = _setup(c, args, ipam_result, nl, cnl, fd, state)
            except BaseException:
                _rollback(c, args, ipam, state)
                raise
    finally:
        posix.close(fd)
    return result


def _setup(c, args, ipam_result, nl, cnl, fd, state: dict):
    """ADD's kernel work in the order the kernel needs it: firewall batch
    started, bridge, gateways and sysctls, veth, container addresses and
    routes, the result. `state` tells the rollback what was made. (long: one
    sequence whose steps share the links and the rollback state; split, each
    part would take most of the same arguments.)"""
    from cni import ipaddr
    from cni.types import Interface, Result, Route
    from cni_bridge import link
    if needs_firewall(c):
        # Started now, waited for at the end: the rule commit runs while the
        # links are made (its lock is held until then).
        from cni_bridge import firewall
        state["firewall"] = firewall.driver(c.firewall).setup(
            attachment(c, args.container_id, args.ifname, ipam_result.ips), early=state.pop("early", None))
    families = {ipaddr.ip_interface(ip.address).version for ip in ipam_result.ips}
    if c.remove_idle_bridge:
        # held until the veth is on the bridge: a DEL must not remove it meanwhile
        state["bridge_lock"] = link.BridgeLock(c.bridge, exclusive=False)
    bridge, state["bridge_created"] = link.ensure_bridge(nl, c.bridge, c.mtu, c.promisc)
    from cni.env import environ
    pause = environ().get("CNI_BRIDGE_DEBUG_PAUSE")   # tests: widen the bridge-to-veth window
    if pause:
        import time
        time.sleep(float(pause))
    gateways = []
    for ip in ipam_result.ips:
        iface = ipaddr.ip_interface(ip.address)
        if c.is_gateway and not ip.gateway:
            ip.gateway = str(iface.network.network_address + 1)
        if c.is_gateway:
            gateways.append((ip.gateway, iface.network.prefixlen))
    if c.is_gateway:
        link.ensure_gateways(nl, bridge, gateways, c.force_address)
        if 4 in families:
            link.sysctl("net/ipv4/ip_forward", "1")
        if 6 in families:
            link.sysctl("net/ipv6/conf/all/forwarding", "1")
    if 4 in families and c.port_mappings:
        link.sysctl(f"net/ipv4/conf/{c.bridge}/route_localnet", "1")
    host = link.host_veth_name(c.network, args.container_id, args.ifname)
    hlink = link.add_veth(nl, fd, host, args.ifname, c.mtu, bridge, c.mac,
                          link.veth_alias(c.network, args.container_id, args.ifname), c.hairpin)
    if state.get("bridge_lock"):
        state.pop("bridge_lock").__exit__()
    clink = cnl.link(args.ifname)
    link.quiet_ipv6(fd, args.ifname, 6 in families)
    cnl.set_link(clink["index"], up=True)
    for ip in ipam_result.ips:
        iface = ipaddr.ip_interface(ip.address)
        cnl.add_addr(clink["index"], str(iface.ip), iface.network.prefixlen)
    routes = list(ipam_result.routes)
    if c.is_default_gateway:
        for ip in ipam_result.ips:
            dst = "0.0.0.0/0" if ":" not in ip.address else "::/0"
            if ip.gateway and not any(r.dst == dst for r in routes):
                routes.append(Route(dst=dst, gw=ip.gateway))
    gw_of = {ipaddr.ip_interface(ip.address).version: ip.gateway for ip in ipam_result.ips}
    for r in routes:
        net = ipaddr.ip_network(r.dst, strict=False)
        gw = r.gw or gw_of.get(net.version)
        try:
            cnl.add_route(str(net.network_address), net.prefixlen, gw=gw, oif=clink["index"],
                          table=r.table, priority=r.priority, mtu=r.mtu, advmss=r.advmss, scope=r.scope)
        except OSError as err:
            if err.errno != 17:
                raise CNIError(PLUGIN_FAILURE, f"failed to add route {r.dst} via {gw}: {err.strerror}") from None
    if state["firewall"] is not None:
        pending, state["firewall"] = state["firewall"], None
        pending.wait()
        if any(pm.protocol == "udp" for pm in c.port_mappings):
            _flush_udp_conntrack(c)
    bridge = nl.link(c.bridge) or bridge

    prev = c.prev_result.convert(c.cni_version) if c.prev_result else None
    base = len(prev.interfaces) if prev else 0
    mtu = clink["mtu"] if c.mtu else None
    result = Result(cni_version=c.cni_version,
                    interfaces=(prev.interfaces if prev else []) + [
                        Interface(name=bridge["name"], mac=bridge["mac"]),
                        Interface(name=hlink["name"], mac=hlink["mac"], mtu=mtu),
                        Interface(name=args.ifname, mac=clink["mac"], sandbox=args.netns, mtu=mtu)],
                    ips=(prev.ips if prev else []), routes=(prev.routes if prev else []) + routes,
                    dns=ipam_result.dns if not ipam_result.dns.empty() or not prev else prev.dns)
    for ip in ipam_result.ips:
        ip.interface = base + 2
        result.ips.append(ip)
    return result


def _flush_udp_conntrack(c) -> None:
    """Stale UDP conntrack entries would keep bypassing the new DNAT (portmap
    does the same); conntrack exits 1 when there was nothing to delete."""
    from cni_bridge.proc import run
    for pm in c.port_mappings:
        if pm.protocol == "udp":
            try:
                run(["conntrack", "-D", "-p", "udp", "--dport", str(pm.host_port)], check=False)
            except CNIError:
                pass


def _rollback(c, args, ipam, state: dict) -> None:
    """Undo a failed ADD: links, rules, lease (delegate DEL too: P12), and
    the bridge if this call made it."""
    from cni_bridge import link
    for step in (lambda: state.get("bridge_lock") and state.pop("bridge_lock").__exit__(),
                 lambda: state.get("early") and state.pop("early").release(),   # its lock, before another
                 lambda: state["firewall"] and state["firewall"].wait(),
                 lambda: link.delete_attachment(c.network, args.container_id, args.ifname, args.netns),
                 lambda: _teardown_rules(c, args.container_id, args.ifname).wait(),
                 lambda: ipam.delete(args.container_id, args.ifname),
                 lambda: state["bridge_created"] and link.delete_idle_bridge(c.bridge)):
        try:
            step()
        except Exception:
            pass


def _families(c: bconfig.BridgeConf) -> tuple[int, ...]:
    """Address families the network can have, from the raw config (cheap:
    DEL must not pay for reading rules of a family it never used)."""
    if not c.builtin_ipam:
        return (4, 6)
    ipam = c.ipam
    sets = list(ipam.get("ranges") or []) + list((c.raw.get("runtimeConfig") or {}).get("ipRanges") or [])
    subnets = [r.get("subnet", "") for rs in sets if isinstance(rs, list) for r in rs if isinstance(r, dict)]
    if ipam.get("subnet"):
        subnets.append(ipam["subnet"])
    fams = {6 if ":" in str(s) else 4 for s in subnets}
    return tuple(sorted(fams)) or (4, 6)


def _teardown_rules(c, cid: str, ifname: str):
    """Start removing the attachment's rules; returns a Pending to wait for.
    With the config's backend unknown, every backend's (one after the other:
    a Pending holds the firewall lock)."""
    from cni_bridge import firewall
    owner = firewall.owner_comment(c.network, cid, ifname)
    *before, last = [c.firewall] if c.firewall else list(firewall.BACKENDS)
    for backend in before:
        firewall.driver(backend).teardown(c.network, owner=owner, families=_families(c)).wait()
    return firewall.driver(last).teardown(c.network, owner=owner, families=_families(c))


# --- DEL ------------------------------------------------------------------------
def cmd_del(args: PluginArgs, conf: dict) -> None:
    """Idempotent (P5): a missing namespace, link, lease or rule is fine; the
    lease is always released. A config that cannot be parsed still names the
    network: what is ours is found by container id and ifname, and stderr
    says which fields fell back to their defaults."""
    from cni_bridge import config as bconfig  # not for VERSION: its dataclasses cost ~5 ms
    try:
        c = bconfig.parse(conf, args, with_env=False, with_prev=False)
    except CNIError as err:
        c = bconfig.salvage(conf)
        import sys
        print(f"cni-bridge: DEL of {args.container_id}/{args.ifname} with a config it cannot parse ({err}): "
              f"removing by container id and ifname; defaults used for: {', '.join(c.unread) or 'nothing'}",
              file=sys.stderr)
    from cni_bridge import link
    from cni_bridge.proc import in_thread
    ipam = _ipam(c, args, env_args=False, parse=False)
    # The links go first, in a thread: their deletion blocks in the kernel
    # (RCU, ~15-25 ms) while the rules are read and committed by their tools.
    links = in_thread(link.delete_attachment, c.network, args.container_id, args.ifname, args.netns,
                      idle_bridge=c.bridge if c.remove_idle_bridge else "")
    pending = None
    try:
        pending = _teardown_rules(c, args.container_id, args.ifname)
        ipam.delete(args.container_id, args.ifname)
    finally:
        try:
            links()
        finally:
            if pending is not None:
                pending.wait()


# --- CHECK ----------------------------------------------------------------------
def cmd_check(args: PluginArgs, conf: dict) -> None:
    from cni_bridge import config as bconfig  # not for VERSION: its dataclasses cost ~5 ms
    c = bconfig.parse(conf, args)
    if c.prev_result is None:
        raise CNIError(INVALID_NETWORK_CONFIG, "required prevResult missing")
    prev = c.prev_result
    idx = next((i for i, itf in enumerate(prev.interfaces)
                if itf.name == args.ifname and itf.sandbox), None)
    if idx is None:
        raise CNIError(PLUGIN_FAILURE, f"prevResult has no interface {args.ifname} in a sandbox")
    ips = [ip for ip in prev.ips if ip.interface == idx]
    from cni import ipaddr
    from cni_bridge import link, netlink, netns
    _ipam(c, args).check(args.container_id, args.ifname,
                         [str(ipaddr.ip_interface(ip.address).ip) for ip in ips])
    with netlink.Netlink() as nl:
        br = nl.link(c.bridge)
        if br is None or br["kind"] != "bridge":
            raise CNIError(PLUGIN_FAILURE, f"bridge {c.bridge} is missing")
        host = nl.link(link.host_veth_name(c.network, args.container_id, args.ifname))
        if host is None or host["master"] != br["index"]:
            raise CNIError(PLUGIN_FAILURE, f"host veth of {args.ifname} is missing or not on {c.bridge}")
    fd = link.open_netns(args.netns)
    try:
        with netns.netlink_in(fd) as cnl:
            clink = cnl.link(args.ifname)
            if clink is None:
                raise CNIError(PLUGIN_FAILURE, f"container interface {args.ifname} is missing")
            want_mac = prev.interfaces[idx].mac
            if want_mac and clink["mac"] != want_mac.lower():
                raise CNIError(PLUGIN_FAILURE, f"interface {args.ifname} has MAC {clink['mac']}, "
                               f"expected {want_mac}")
            have = set(cnl.addrs(clink["index"]))
            for ip in ips:
                iface = ipaddr.ip_interface(ip.address)
                if (str(iface.ip), iface.network.prefixlen) not in have:
                    raise CNIError(PLUGIN_FAILURE, f"address {ip.address} is missing on {args.ifname}")
            table = cnl.routes()
            for r in prev.routes:
                net = ipaddr.ip_network(r.dst, strict=False)
                if not any(t["dst"] == str(net.network_address) and t["plen"] == net.prefixlen and
                           (not r.gw or t["gw"] == r.gw) for t in table):
                    raise CNIError(PLUGIN_FAILURE, f"route {r.dst} via {r.gw} is missing")
    finally:
        posix.close(fd)
    if needs_firewall(c):
        from cni_bridge import firewall
        att = attachment(c, args.container_id, args.ifname, ips)
        drv, families = firewall.driver(c.firewall), tuple(sorted(att.families()))
        want, got = firewall.expected_count(att, c.firewall), drv.owned(families).get(att.comment, 0)
        if got < want:
            raise CNIError(PLUGIN_FAILURE, f"firewall rules of {args.container_id}/{args.ifname} are missing",
                           f"found {got} of {want} ({c.firewall})")
        missing = (f"of network {c.network}" if not drv.shared_intact(att) else
                   "every attachment goes through" if not drv.scaffold_intact(families) else "")
        if missing:
            raise CNIError(PLUGIN_FAILURE, f"the firewall rules {missing} are missing ({c.firewall}): "
                           "`minidocker network reload` puts them back")


# --- GC ---------------------------------------------------------------------------
def cmd_gc(args: PluginArgs, conf: dict) -> None:
    """Release what is not in the valid set; keep going after errors (P7)."""
    from cni_bridge import config as bconfig  # not for VERSION: its dataclasses cost ~5 ms
    c = bconfig.parse(conf, args, with_env=False)
    items = next((conf[k] for k in VALID_KEYS if k in conf), [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise CNIError(INVALID_NETWORK_CONFIG, "cni.dev/valid-attachments must be a list of objects")
    valid = {(str(i.get("containerID", "")), str(i.get("ifname", ""))) for i in items}
    from cni_bridge import firewall, link
    errors: list[CNIError] = []

    def attempt(fn):
        try:
            fn()
        except CNIError as err:
            errors.append(err)
        except Exception as exc:
            errors.append(CNIError(PLUGIN_FAILURE, f"{type(exc).__name__}: {exc}"))

    attempt(lambda: _ipam(c, args, env_args=False).gc(valid))
    keep = {firewall.owner_comment(c.network, cid, ifn) for cid, ifn in valid}
    attempt(lambda: firewall.driver(c.firewall).teardown(c.network, keep=keep).wait())
    attempt(lambda: link.stale_veths(c.network, valid))
    if c.remove_idle_bridge:
        attempt(lambda: link.delete_idle_bridge(c.bridge))
    if errors:
        first = errors[0]
        raise CNIError(first.code, "; ".join(e.msg for e in errors),
                       "; ".join(e.details for e in errors if e.details))


# --- STATUS -------------------------------------------------------------------------
TOOLS = {"iptables": ("iptables-save", "iptables-restore"), "nftables": ("nft",)}


def cmd_status(args: PluginArgs, conf: dict) -> None:
    """Ready (exit 0) unless ADD could not succeed: the firewall backend's
    tools are missing or the address pool is exhausted (code 50)."""
    from cni_bridge import config as bconfig  # not for VERSION: its dataclasses cost ~5 ms
    c = bconfig.parse(conf, args, with_env=False)
    if needs_firewall(c):
        from cni_bridge import proc
        for tool in TOOLS[c.firewall]:
            try:
                proc.which(tool)
            except CNIError:
                raise CNIError(50, f"{tool} not found: the {c.firewall} backend cannot add rules") from None
    _ipam(c, args, env_args=False).status()


HANDLERS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "GC": cmd_gc, "STATUS": cmd_status}


def main() -> None:
    """The executable. Ends with _exit once stdout is flushed: the
    interpreter's orderly finalisation (module teardown) costs ~5 ms, measured,
    and a plugin has nothing left to clean up (every tool it started was
    waited for, every fd closes with the process)."""
    import sys
    try:
        skel.main(HANDLERS, about=ABOUT)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    posix._exit(code)


if __name__ == "__main__":
    main()
