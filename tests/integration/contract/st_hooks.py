"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): JSON lines import bodies sent as text."""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
