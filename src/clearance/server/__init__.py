"""The HTTP server: API, channel callbacks and the web inbox."""
