"""cni-bridge: a CNI 1.1 bridge plugin (bridge + host-local IPAM + firewall)."""
