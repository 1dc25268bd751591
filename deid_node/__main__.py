from deid_node.cli import main

main()
