"""Serving an exported run over HTTP: its input schema, request checking (pure Python), the app."""
