"""the0 API server: gRPC (grpc.aio) with REST through Envoy's gRPC-JSON transcoder."""

__version__ = "0.1.0"
