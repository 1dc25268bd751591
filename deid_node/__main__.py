from deid_node.cli.app import main

main()
