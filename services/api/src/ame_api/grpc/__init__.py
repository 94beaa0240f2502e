"""The gRPC front door (grpc.aio), with health checking and server reflection."""
