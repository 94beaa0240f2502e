"""PostgreSQL through asyncpg: the pool and forward-only migrations."""

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# What repository functions take: a plain connection (migrate jobs, tests) or one checked out of the pool.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

__all__ = ["Connection"]
