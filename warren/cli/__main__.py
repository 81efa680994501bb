from warren.cli.main import main

main()
