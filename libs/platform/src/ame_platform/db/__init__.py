"""PostgreSQL through asyncpg: the pool and forward-only migrations."""
