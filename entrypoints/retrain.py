"""MLproject entry point `retrain`: a thin shell over `alertclf retrain` (see MLproject)."""

import sys

from alertclf.cli import main

if __name__ == "__main__":
    sys.exit(main(["retrain", *sys.argv[1:]]))
