from widthc.cli import main

main()
