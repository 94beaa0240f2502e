"""Real NATS and PostgreSQL servers run as child processes, for dev mode and tests."""

from ame_platform.embedded._process import EmbeddedServerError
from ame_platform.embedded.nats import EmbeddedNats, NatsCluster, find_nats_server
from ame_platform.embedded.postgres import EmbeddedPostgres

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "EmbeddedServerError", "NatsCluster", "find_nats_server"]
