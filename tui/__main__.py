import sys

from dynq.cli import main

sys.exit(main(["tui", *sys.argv[1:]]))
