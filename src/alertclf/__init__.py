"""alertclf: alert storms in, a short ranked list of incidents out."""

__version__ = "0.1.0"
