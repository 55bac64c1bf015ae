"""Executed by MLflow when it loads a model version ("models from code").

This file is the one place with an import-time call: MLflow requires ``set_model`` at
module level here. Nothing else imports it.
"""

import mlflow

from alertclf.serving import AlertClusteringPyfunc

mlflow.models.set_model(AlertClusteringPyfunc())
