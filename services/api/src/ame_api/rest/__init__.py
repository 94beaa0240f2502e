"""The REST front door (FastAPI)."""
