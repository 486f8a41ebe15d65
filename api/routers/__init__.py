"""The API's routers, one module per resource, each with its models beside it."""
