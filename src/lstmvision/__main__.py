import sys

from lstmvision.cli import main

sys.exit(main())
