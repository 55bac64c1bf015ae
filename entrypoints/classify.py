"""MLproject entry point `classify`: a thin shell over `alertclf classify` (see MLproject)."""

import sys

from alertclf.cli import main

if __name__ == "__main__":
    sys.exit(main(["classify", *sys.argv[1:]]))
