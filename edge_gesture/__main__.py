import sys

from edge_gesture.cli import main

sys.exit(main())
