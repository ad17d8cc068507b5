import sys

from dynq.cli import main

sys.exit(main())
