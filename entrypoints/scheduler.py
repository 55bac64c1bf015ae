"""The scheduler as a script: a thin shell over `alertclf run` (same options).

Not an MLproject entry point on purpose: the scheduler itself starts `mlflow run` for each
job, so it runs beside MLflow, not inside a run.

    python entrypoints/scheduler.py --alerts A --graph G --interval 15
"""

import sys

from alertclf.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
