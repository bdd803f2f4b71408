"""The CNI protocol, once: versions, errors, types, environment, plugin skel.

Both sides of the protocol use this package: the `cni-bridge` plugin and
minidocker's executor. It imports only the standard library so that a plugin
built on it starts fast.
"""
