"""`scripts/bench cni`'s verdicts: each row's ratio beside its goal (ADD <=
1x, DEL <= 0.8x the reference, VERSION <= 20 ms). Nothing here is timed:
the rows are made up."""
from __future__ import annotations

from bench.cni import goal_lines


def test_each_row_is_judged_against_its_own_goal():
    rows = [("ADD ipMasq, IPv4 (iptables)", 20.0, "bridge+host-local", 20.0),
            ("ADD ipMasq, dual stack (nftables)", 21.0, "bridge+host-local", 20.0),
            ("DEL ipMasq, IPv4 (iptables)", 16.0, "bridge+host-local", 20.0),
            ("DEL ipMasq, dual stack (nftables)", 17.0, "bridge+host-local", 20.0),
            ("VERSION (start-up alone)", 20.0, "bridge", 3.0),
            ("VERSION (start-up alone)", 20.5, "bridge", 3.0)]
    verdicts = [line.rsplit(": ", 1)[1] for line in goal_lines(rows)]
    assert verdicts == ["met", "MISSED", "met", "MISSED", "met", "MISSED"]
    lines = goal_lines(rows)
    assert "1.05x (goal <= 1x)" in lines[1] and "0.85x (goal <= 0.8x)" in lines[3]
    assert "20.50 ms (goal <= 20 ms)" in lines[5]
