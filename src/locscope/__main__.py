from locscope.cli import main

main()
