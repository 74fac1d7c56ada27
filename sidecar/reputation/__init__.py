"""Reputation protection: five levels per tenant from its send, bounce and complaint rates."""
