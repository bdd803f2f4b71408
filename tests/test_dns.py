"""The per-network DNS server: container names, aliases, service names and
PTR answered from the network's state, unknown names NXDOMAIN at once,
everything else forwarded to the host's resolvers (here: an upstream the
test runs in `ext`); started with the first container, restarted when found
dead, gone with the last."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bridge_helpers import TOOLS, in_container, stop_server, tcp_server
from harness import EXT_ADDR

UPSTREAM = r'''
import socket, sys
from dnslib import DNSRecord, RR, QTYPE, A, RCODE
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    data, peer = s.recvfrom(4096)
    req = DNSRecord.parse(data)
    reply = req.reply()
    if str(req.q.qname).rstrip(".") == "upstream.test" and req.q.qtype == QTYPE.A:
        reply.add_answer(RR(req.q.qname, QTYPE.A, rdata=A("192.0.2.7"), ttl=60))
    elif str(req.q.qname).rstrip(".") != "upstream.test":
        reply.header.rcode = RCODE.NXDOMAIN
    s.sendto(reply.pack(), peer)
'''


def lookup(md, ref: str, name: str):
    return md("exec", ref, "busybox", "nslookup", name, check=False)


def test_names_services_nxdomain_forwarding_and_lifecycle(tnode, tmp_path):
    node = tnode
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"search example.org\nnameserver {EXT_ADDR}\n")
    env = node.env(MINIDOCKER_RESOLV_CONF=resolv)

    def md(*args, **kw):
        return node.md(*args, env=env, **kw)

    upstream = node.popen([sys.executable, "-c", UPSTREAM, EXT_ADDR], ns=node.ext_netns,
                          start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        md("network", "create", "--subnet", "10.7.0.0/24", "app")
        md("run", "-d", "--name", "web", "--network", "app", "--network-alias", "www",
           "--label", "app=web", TOOLS, *tcp_server("web"))
        md("run", "-d", "--name", "cl", "--network", "app", TOOLS, "sleep", "300")
        vip = md("service", "create", "websvc", "--network", "app", "--selector", "app=web",
                 "--port", "80").stdout.strip()
        conf = md("exec", "cl", "cat", "/etc/resolv.conf").stdout
        assert conf.splitlines()[0] == "nameserver 10.7.0.1" and "search dns.minidocker example.org" in conf
        for name, want in (("web", "10.7.0.2"), ("www", "10.7.0.2"), ("websvc", vip),
                           ("upstream.test", "192.0.2.7")):
            out = lookup(md, "cl", name)
            assert out.returncode == 0 and f"Address: {want}" in out.stdout, (name, out.stdout, out.stderr)
        # glibc's getaddrinfo (socat's; no nsswitch.conf in the image: DNS first) finds the
        # service by name and reaches its backend through the VIP
        assert in_container(node, "cl", "websvc", 80, tries=3) == "web"
        ptr = lookup(md, "cl", "10.7.0.2")
        assert "name = web" in ptr.stdout, ptr.stdout
        t0 = time.monotonic()
        out = lookup(md, "cl", "nosuch")
        assert out.returncode != 0 and "NXDOMAIN" in out.stdout + out.stderr, out.stdout
        assert time.monotonic() - t0 < 2
        out = lookup(md, "cl", "nosuch.example")            # the upstream's NXDOMAIN, relayed
        assert out.returncode != 0 and "NXDOMAIN" in out.stdout + out.stderr, out.stdout
        # a flood of forwarded queries from one container does not stall the others' answers
        flood = md("exec", "cl", "sh", "-c",
                   "i=0; while [ $i -lt 200 ]; do busybox nslookup q$i.example >/dev/null 2>&1 & "
                   "i=$((i+1)); done; wait", check=False, timeout=60)
        assert flood.returncode == 0
        assert "Address: 10.7.0.2" in lookup(md, "web", "web").stdout
        # found dead: the next command on the network starts it again
        pidfile = node.run_root / "dns"
        pid = int(next(pidfile.glob("*.pid")).read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        md("run", "-d", "--name", "late", "--network", "app", TOOLS, "sleep", "300")
        out = lookup(md, "late", "cl")
        assert out.returncode == 0 and "Address: 10.7.0.3" in out.stdout, out.stdout
        md("service", "rm", "websvc")
        assert lookup(md, "cl", "websvc").returncode != 0
        md("rm", "-f", "web", "cl", "late")
        assert not list(pidfile.glob("*.pid"))
        md("network", "rm", "app")
    finally:
        stop_server(upstream)


def test_aaaa_and_ipv6_ptr_on_a_dual_stack_network(tnode):
    md = tnode.md
    md("network", "create", "--ipv6", "--subnet", "10.9.0.0/24", "--subnet", "fd00:9::/64", "dual")
    md("run", "-d", "--name", "six", "--network", "dual", TOOLS, "sleep", "300")
    out = lookup(md, "six", "six")
    assert "Address: 10.9.0.2" in out.stdout and "Address: fd00:9::2" in out.stdout, out.stdout
    ptr = md("exec", "six", "busybox", "nslookup", "fd00:9::2", check=False).stdout
    assert "name = six" in ptr, ptr
    md("rm", "-f", "six")
    md("network", "rm", "dual")
