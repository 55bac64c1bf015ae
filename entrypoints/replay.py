"""MLproject entry point `replay`: a thin shell over `alertclf replay` (see MLproject)."""

import sys

from alertclf.cli import main

if __name__ == "__main__":
    sys.exit(main(["replay", *sys.argv[1:]]))
