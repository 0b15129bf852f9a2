import sys

from raypair.cli import main

sys.exit(main())
