"""`python -m minidocker.network.cni ...` runs `minidocker cni ...`."""
from minidocker.cli_cni import main

main()
