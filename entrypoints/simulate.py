"""MLproject entry point `simulate`: a thin shell over `alertclf simulate` (see MLproject)."""

import sys

from alertclf.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", *sys.argv[1:]]))
