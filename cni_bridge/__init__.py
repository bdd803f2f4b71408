"""cni-bridge: a CNI 1.1 bridge plugin (bridge + host-local IPAM + firewall)."""
import sys as _sys

if _sys.argv and _sys.argv[0].endswith("cni-bridge"):
    # The plugin executable lives for a few tens of milliseconds: the cyclic
    # GC only costs time there (~1.5 ms of start-up, measured). Importers
    # such as a long-running runtime keep theirs.
    import gc as _gc
    _gc.disable()
