import sys

from d2sm.cli import main

sys.exit(main())
