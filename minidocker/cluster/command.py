"""`minidocker cluster ...` and `minidocker node ...`: parse, call
cluster.node, print. Loaded lazily by cli.py (never on `run`)."""
from __future__ import annotations

import json

import click

from minidocker.cluster import config as cconf


@click.group("cluster", help="The cluster's configuration in etcd.")
def cluster():
    pass


@cluster.command("init")
@click.option("--etcd", "url", required=True, help="etcd client URL, e.g. http://10.0.0.1:2379")
@click.option("--cluster-cidr", default=cconf.DEFAULT_CIDR, show_default=True)
@click.option("--node-prefix", type=int, default=cconf.DEFAULT_PREFIX, show_default=True)
@click.option("--backend", default="vxlan", show_default=True, help="host-gw or vxlan")
@click.option("--vni", type=int, default=1, show_default=True)
@click.option("--port", type=int, default=4789, show_default=True, help="vxlan UDP port")
def init_cmd(url, cluster_cidr, node_prefix, backend, vni, port):
    """Write the cluster's configuration once (the same again is a no-op)."""
    from minidocker.cluster import node
    cfg = cconf.validate(cconf.ClusterConfig(cluster_cidr, node_prefix, backend, vni, port))
    written = node.init(url, cfg)
    click.echo(("initialised " if written else "already initialised ") + cfg.to_json())


@click.group("node", help="This node's membership of a cluster.")
def node_group():
    pass


def _join_options(fn):
    for opt in reversed([
            click.option("--etcd", "url", help="etcd client URL, e.g. http://10.0.0.1:2379"),
            click.option("--name", help="node name (default: the host name)"),
            click.option("--iface", help="the link whose address peers use"),
            click.option("--public-ip", help="the address peers use (default: the default route's)"),
            click.option("--lease-ttl", default="30s", show_default=True, help="lease TTL, e.g. 30s")]):
        fn = opt(fn)
    return fn


@node_group.command("join")
@_join_options
def join_cmd(url, name, iface, public_ip, lease_ttl):
    """Lease a subnet, create network `pods`, start the node agent; returns
    once the routes or overlay to every live peer are in place."""
    from minidocker.cluster import node
    from minidocker.cluster.store import parse_url
    if not url:
        raise click.UsageError("--etcd URL is required")
    parse_url(url)
    out = node.join(url, name, iface, public_ip, cconf.parse_ttl(lease_ttl))
    click.echo(f"node {out['name']} joined: subnet {out['subnet']}, address {out['public_ip']}, "
               f"backend {out['backend']}")


@node_group.command("agent")
@_join_options
@click.option("--from-state", is_flag=True, hidden=True, help="what `node join` recorded")
def agent_cmd(url, name, iface, public_ip, lease_ttl, from_state):
    """Run the node agent in the foreground (for systemd): join's flags."""
    import os
    import sys
    from minidocker.cluster import node
    from minidocker.cluster.nodestate import NodeState
    if not from_state:
        if not url:
            raise click.UsageError("--etcd URL is required")
        from minidocker.cluster.store import parse_url
        parse_url(url)
        have = NodeState.load()
        NodeState(etcd=url, name=cconf.check_node_name(name or os.uname().nodename.lower()),
                  public_ip=node.public_address(iface, public_ip), ttl=cconf.parse_ttl(lease_ttl),
                  subnet=have.subnet if have else "").save()
    sys.exit(node.run_agent())


@node_group.command("leave")
def leave_cmd():
    """Stop the agent and remove everything the node added (routes, FDB,
    vxlan device, network `pods`, lease)."""
    from minidocker.cluster import node
    for line in node.leave():
        click.echo(f"warning: {line}", err=True)
    click.echo("left the cluster")


@node_group.command("ls")
@click.option("--etcd", "url", help="etcd client URL (default: the one this node joined)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def ls_cmd(url, fmt):
    """Nodes, subnets, addresses, backend and health, from etcd."""
    from minidocker.cluster import node
    rows = node.ls(url)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'NAME':<20} {'SUBNET':<18} {'PUBLIC IP':<16} {'BACKEND':<8} HEALTH")
    for r in rows:
        click.echo(f"{r['Name']:<20} {r['Subnet']:<18} {r['PublicIP']:<16} {r['Backend']:<8} {r['Health']}")
