import sys

from kodestore.cli import main

sys.exit(main())
