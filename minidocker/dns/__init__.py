"""The per-network DNS server (as podman's aardvark-dns): container names,
`--network-alias`es and service names of one user network answered from its
state, everything else forwarded to the host's resolvers.

    lifecycle.py  started with a network's first container, ended with its
                  last, restarted by any attach/detach that finds it dead;
                  the containers' resolv.conf
    zone.py       the names of a network, read from its endpoint and service
                  records; the upstream resolvers
    server.py     the process: one UDP socket on the bridge's gateway, port 53
"""
