from minidocker.cli import main

main()
