"""NATS JetStream: names, stream declarations, publishing and consuming."""
