import sys

from fpezoo.cli import main

sys.exit(main())
