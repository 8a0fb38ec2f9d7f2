"""Models as a service: TF Serving's REST API with keys, metering and quotas.

Imported explicitly (it needs the `serving` extra: FastAPI, uvicorn,
prometheus-client, httpx):

```python
from aiservice_kit.serving import Client, create_app
```

Names load on first use, so `aiservice_kit.serving.cli` (the `serve`,
`keys` and `usage` commands) can be registered without importing FastAPI.
"""

import importlib
from typing import Any

_LAZY = {
    "create_app": "aiservice_kit.serving.app",
    "ApiKey": "aiservice_kit.serving.auth",
    "KeyStore": "aiservice_kit.serving.auth",
    "BatchingConfig": "aiservice_kit.serving.batching",
    "Client": "aiservice_kit.serving.client",
    "ServingClientError": "aiservice_kit.serving.client",
    "DatabaseMeter": "aiservice_kit.serving.metering",
    "Meter": "aiservice_kit.serving.metering",
    "SQLiteMeter": "aiservice_kit.serving.metering",
    "UsageRecord": "aiservice_kit.serving.metering",
    "UsageSummary": "aiservice_kit.serving.metering",
    "Bill": "aiservice_kit.serving.pricing",
    "PriceList": "aiservice_kit.serving.pricing",
    "ServerConfig": "aiservice_kit.serving.config",
    "load_config": "aiservice_kit.serving.config",
    "Plan": "aiservice_kit.serving.ratelimit",
    "ModelConfig": "aiservice_kit.serving.registry",
}

__all__ = [
    "ApiKey",
    "BatchingConfig",
    "Bill",
    "Client",
    "DatabaseMeter",
    "KeyStore",
    "Meter",
    "ModelConfig",
    "Plan",
    "PriceList",
    "SQLiteMeter",
    "ServerConfig",
    "ServingClientError",
    "UsageRecord",
    "UsageSummary",
    "create_app",
    "load_config",
]


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(
            f"module 'aiservice_kit.serving' has no attribute {name!r}"
        ) from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
