from minidocker.entry import main

main()
