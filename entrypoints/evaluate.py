"""MLproject entry point `evaluate`: a thin shell over `alertclf evaluate` (see MLproject)."""

import sys

from alertclf.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
