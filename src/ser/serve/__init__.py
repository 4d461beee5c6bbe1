"""The HTTP service over ser.runtime: `create_app(ServeSettings(bundle=...))`, or `ser-serve BUNDLE`."""

from ser.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
