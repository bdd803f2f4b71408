"""The DNS server process of one network: `python -m minidocker.dns.server
NETWORK_ID ADDRESS PIDFILE`. It binds ADDRESS:53/udp, forks (the first
process exits once the socket is bound and the pid file written, so the
container that caused the start never asks too early) and serves until
SIGTERM, or until its pid file stops naming it (a safety net: nothing of
ours outlives its network).

One thread, one selector: local names are answered at once from the zone;
forwarded queries each get their own socket to an upstream, retried on the
next upstream after a second, SERVFAIL after four; at most PER_CLIENT of one
client are in flight, so a flood from one container cannot starve others.
"""
from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSRecord

from minidocker import records
from minidocker.dns import zone as zonemod
from minidocker.dns.lifecycle import DOMAIN

TTL = 10            # names change as containers come and go
PER_CLIENT = 64
RETRY, GIVE_UP = 1.0, 4.0


class Pending:
    def __init__(self, client, data: bytes, servers: list[str]):
        self.client, self.data, self.servers = client, data, servers
        self.index, self.sock = 0, None
        self.started = time.monotonic()
        self.tried = 0.0


class Server:
    def __init__(self, sock: socket.socket, net_id: str, pidfile: str):
        self.sock, self.pidfile = sock, pidfile
        self.zone = zonemod.Zone(net_id)
        self.upstreams = zonemod.upstreams()
        self.search = zonemod.search_domains()
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ, None)
        self.pending: dict[socket.socket, Pending] = {}
        self.per_client: dict[str, int] = {}

    # --- answers -------------------------------------------------------------
    def answer(self, req: DNSRecord) -> DNSRecord | None:
        """The local answer, or None to forward."""
        q = req.q
        name = str(q.qname).rstrip(".").lower()
        ours = name.endswith("." + DOMAIN)
        if ours:
            name = name[:-len(DOMAIN) - 1]
        self.zone.refresh()
        for domain in self.search:   # a local name tried with a search domain of the host's
            if name.endswith("." + domain) and name[:-len(domain) - 1] in self.zone.forward:
                name = name[:-len(domain) - 1]
        reply = req.reply()
        reply.header.ra = 1
        if name in self.zone.forward:
            v4, v6 = self.zone.forward[name]
            if q.qtype in (QTYPE.A, QTYPE.ANY):
                for ip in v4:
                    reply.add_answer(RR(q.qname, QTYPE.A, rdata=A(ip), ttl=TTL))
            if q.qtype in (QTYPE.AAAA, QTYPE.ANY):
                for ip in v6:
                    reply.add_answer(RR(q.qname, QTYPE.AAAA, rdata=AAAA(ip), ttl=TTL))
            return reply
        if q.qtype == QTYPE.PTR and name in self.zone.reverse:
            reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(self.zone.reverse[name] + "."), ttl=TTL))
            return reply
        if ours or "." not in name:   # unknown and ours to deny: at once
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        return None

    def query(self, data: bytes, client) -> None:
        try:
            req = DNSRecord.parse(data)
        except Exception:  # noqa: BLE001 - dnslib raises several kinds on garbage
            return
        if req.header.qr or not req.questions:
            return
        if req.header.opcode != 0:
            reply = req.reply()
            reply.header.rcode = RCODE.NOTIMP
            self.sock.sendto(reply.pack(), client)
            return
        reply = self.answer(req)
        if reply is not None:
            self.sock.sendto(reply.pack(), client)
            return
        if not self.upstreams or self.per_client.get(client[0], 0) >= PER_CLIENT:
            self.fail(req, client, RCODE.SERVFAIL if not self.upstreams else RCODE.REFUSED)
            return
        self.forward(Pending(client, data, self.upstreams))

    def fail(self, req: DNSRecord, client, rcode) -> None:
        reply = req.reply()
        reply.header.rcode = rcode
        self.sock.sendto(reply.pack(), client)

    # --- forwarding -----------------------------------------------------------
    def forward(self, p: Pending) -> None:
        server = p.servers[p.index % len(p.servers)]
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.connect((server, 53))
            s.send(p.data)
        except OSError:
            pass   # the retry moves on to the next upstream
        if p.sock is None:
            self.per_client[p.client[0]] = self.per_client.get(p.client[0], 0) + 1
        else:
            self._drop_socket(p.sock)
        p.sock, p.tried = s, time.monotonic()
        self.sel.register(s, selectors.EVENT_READ, p)
        self.pending[s] = p

    def _drop_socket(self, s) -> None:
        self.sel.unregister(s)
        self.pending.pop(s, None)
        s.close()

    def finish(self, p: Pending) -> None:
        self._drop_socket(p.sock)
        left = self.per_client.get(p.client[0], 1) - 1
        if left:
            self.per_client[p.client[0]] = left
        else:
            self.per_client.pop(p.client[0], None)

    def relay(self, p: Pending) -> None:
        try:
            data = p.sock.recv(65535)
        except OSError:
            return
        self.finish(p)
        try:
            self.sock.sendto(data, p.client)
        except OSError:
            pass

    def sweep(self) -> None:
        now = time.monotonic()
        for p in list(self.pending.values()):
            if now - p.started > GIVE_UP:
                self.finish(p)
                try:
                    self.fail(DNSRecord.parse(p.data), p.client, RCODE.SERVFAIL)
                except Exception:  # noqa: BLE001
                    pass
            elif now - p.tried > RETRY:
                p.index += 1
                self.forward(p)

    # --- the loop -------------------------------------------------------------
    def owned(self) -> bool:
        try:
            with open(self.pidfile) as fh:
                return fh.read().split()[0] == str(os.getpid())
        except (OSError, IndexError):
            return False

    def serve(self) -> None:
        last_check = time.monotonic()
        while True:
            for key, _ in self.sel.select(0.5):
                if key.data is None:
                    for _ in range(64):   # drain, but let replies through too
                        try:
                            data, client = self.sock.recvfrom(4096)
                        except BlockingIOError:
                            break
                        self.query(data, client)
                elif key.fileobj in self.pending:
                    self.relay(key.data)
            self.sweep()
            if time.monotonic() - last_check > 2:
                last_check = time.monotonic()
                if not self.owned():
                    return


def main(argv: list[str]) -> int:
    net_id, address, pidfile = argv
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, 53))
    except OSError as exc:
        print(f"minidocker dns: cannot listen on {address}:53: {exc.strerror}", file=sys.stderr)
        return 1
    sock.setblocking(False)
    pid = os.fork()
    if pid:
        with open(pidfile + ".tmp", "w") as fh:
            fh.write(f"{pid} {records.start_time(pid)}\n")
        os.replace(pidfile + ".tmp", pidfile)
        return 0
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):   # the starter waits for EOF on its stderr pipe
        os.dup2(devnull, fd)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    try:
        Server(sock, net_id, pidfile).serve()
    finally:
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
