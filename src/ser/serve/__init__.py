"""The HTTP service over ser.runtime: `create_app(ServeSettings(bundle=...))`, or `ser-serve BUNDLE`.

Imported lazily: a model instance's process imports ser.serve.instances without FastAPI (~24 MiB each)."""

from typing import Any

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ser.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'ser.serve' has no attribute {name!r}")
