"""HTTP: the FastAPI app (api.main:app), its routers, schemas, auth and problem responses."""
