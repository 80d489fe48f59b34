import sys

from wearspec.cli import main

sys.exit(main())
