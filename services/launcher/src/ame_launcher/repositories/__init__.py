"""SQL for the tables the launcher owns."""
