"""Domain health: DNS checks of the sending domains and relay IPs (docs/domain-health.md).

``lookup`` wraps a dnspython resolver (bounded, temporary errors apart); ``mail``, ``spf``,
``dkim``, ``dmarc`` and ``relay`` are the checks, pure functions over it; ``report`` runs them
all and scores the result; ``monitor`` repeats them in the service, off the policy path.
"""
