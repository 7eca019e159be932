"""The gRPC edge: thin servicers, interceptors, and the one place errors become statuses."""
