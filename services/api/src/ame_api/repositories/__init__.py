"""SQL for the tables the api service owns, one module per aggregate."""
