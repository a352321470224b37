"""The API's routers: jobs, catalog (pipelines, models), audit, health."""
