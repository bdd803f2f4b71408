"""minidocker's CNI executor: libcni's behaviour over the `cni` protocol package.

    config    load a configuration directory (.conflist/.conf/.json)
    invoke    find, exec and time out one plugin; parse its answer
    cache     the result cache in libcni's layout (cnitool and CRI tools read it)
    executor  ADD / CHECK / DEL / GC / STATUS over a network list, with locks
    command   `minidocker cni ...` (cnitool's interface)

Other parts of minidocker call `CNIExecutor` with a `NetworkConfigList` and a
`RuntimeConf`.
"""
from minidocker.network.cni.executor import CNIExecutor, RuntimeConf  # noqa: F401
from minidocker.network.cni.executor import MultiError  # noqa: F401,E402
from minidocker.network.cni.invoke import PluginError, PluginNotFound  # noqa: F401,E402
