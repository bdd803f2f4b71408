"""30 parallel ADDs on one network: 30 distinct addresses and every rule in
place; 30 parallel DELs: nothing left (P9)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cni_helpers import BACKENDS, with_prev

N = 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_add_del(cni, backend):
    conf = cni.conf(backend=backend, stack="dual")
    boxes = [cni.container() for _ in range(N)]

    def add(i):
        c = dict(conf, runtimeConfig={"portMappings": [{"hostPort": 9000 + i, "containerPort": 80}]})
        return c, cni.call("ADD", c, boxes[i])

    with ThreadPoolExecutor(N) as pool:
        adds = list(pool.map(add, range(N)))
    for _c, r in adds:
        r.ok()
    v4 = [r.json["ips"][0]["address"] for _c, r in adds]
    v6 = [r.json["ips"][1]["address"] for _c, r in adds]
    assert len(set(v4)) == N and len(set(v6)) == N
    assert len(cni.leases()) == 2 * N
    rules = cni.node.nft_ruleset() if backend == "nftables" else cni.node.iptables_save()
    for i, b in enumerate(boxes):
        # nftables: its elements; iptables: its port's DNAT, one per family
        own = rules.count(f"md/mdtnet/{b.cid}/eth0")
        assert own == 2 if backend == "iptables" else own >= 4, (b.cid, own)
        assert (f"tcp . {9000 + i} " if backend == "nftables" else f"dport {9000 + i}") in rules
    for i, (c, r) in enumerate(adds):
        assert cni.call("CHECK", with_prev(c, r.json), boxes[i]).rc == 0

    def delete(i):
        c, r = adds[i]
        return cni.call("DEL", with_prev(c, r.json), boxes[i])

    with ThreadPoolExecutor(N) as pool:
        for r in pool.map(delete, range(N)):
            r.ok()
    assert cni.leases() == {}
    assert not any(l.startswith("veth") for l in cni.node.link_names())
    rules = cni.node.nft_ruleset() if backend == "nftables" else cni.node.iptables_save()
    assert "md/" not in rules and "minidocker" not in rules.lower()
