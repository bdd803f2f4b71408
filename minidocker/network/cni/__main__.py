"""`python -m minidocker.network.cni ...` runs `minidocker cni ...`."""
from minidocker.network.cni.command import main

main()
