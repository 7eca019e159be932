"""WallWhale: downloads Steam Workshop items for API clients, as a gRPC service."""

__version__ = "0.1.0"
