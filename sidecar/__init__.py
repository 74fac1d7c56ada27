"""postfix-sidecar: policy, suppression, rate limits and bounce ingestion beside Postfix."""

__version__ = "0.1.0"
