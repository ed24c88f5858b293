"""Flask only: routing, content negotiation, headers and the app-level error handlers."""
