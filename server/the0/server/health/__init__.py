"""Health: HealthService.GetHealth (GET /health) and the standard grpc.health.v1 service."""
