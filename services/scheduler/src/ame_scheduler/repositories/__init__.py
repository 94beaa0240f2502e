"""SQL for the tables the scheduler owns."""
