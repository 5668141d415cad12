"""The co-production companion's own Python: settings, app database and the web chat server."""
