"""SQL for the tables the logs service owns."""
