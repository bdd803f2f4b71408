"""The pod network across nodes (flannel-like): a subnet per node leased in
etcd, a node agent converging routes (host-gw) or a VXLAN overlay to the
live peers, and the cluster network `pods` every node's containers join."""
