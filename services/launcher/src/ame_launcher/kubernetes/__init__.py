"""The kubernetes backend: each run attempt is one pod (see backend.py)."""
