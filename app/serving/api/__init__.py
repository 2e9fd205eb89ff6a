"""The HTTP API: ``create_app`` assembles the routes, error handlers, metrics middleware and the lifespan."""
