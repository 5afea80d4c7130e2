"""HTTP: pydantic models, FastAPI routers, the error envelope. Calls server/ only."""
