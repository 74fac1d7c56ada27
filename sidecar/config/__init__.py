"""The configuration: ``load_config`` reads and checks the TOML file into frozen dataclasses.

``fields`` holds the per-key validators, ``schema`` the dataclasses (every key with its default
and documentation), ``load`` the TOML reading, cross-key checks and path resolution.
"""

from sidecar.config.fields import DEFAULT_DATA_DIR, RATE_KEYS, WEBHOOK_EVENTS, ConfigError, redact_url
from sidecar.config.load import CONFIG_ENV, DEFAULT_CONFIG, absolute_sqlite_url, find_config, load_config, resolve_path
from sidecar.config.schema import (
    ApiConfig,
    ApiToken,
    Config,
    DatabaseConfig,
    FeedbackLoop,
    IngestConfig,
    LimitConfig,
    PostfixConfig,
    RateLimitConfig,
    RateLimitRule,
    RecipientsConfig,
    ReputationConfig,
    ServerConfig,
    SuppressionConfig,
    WebhooksConfig,
    WebhookSubscription,
    iter_documented_keys,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "DEFAULT_DATA_DIR",
    "RATE_KEYS",
    "WEBHOOK_EVENTS",
    "ApiConfig",
    "ApiToken",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "FeedbackLoop",
    "IngestConfig",
    "LimitConfig",
    "PostfixConfig",
    "RateLimitConfig",
    "RateLimitRule",
    "RecipientsConfig",
    "ReputationConfig",
    "ServerConfig",
    "SuppressionConfig",
    "WebhookSubscription",
    "WebhooksConfig",
    "absolute_sqlite_url",
    "find_config",
    "iter_documented_keys",
    "load_config",
    "redact_url",
    "resolve_path",
]
