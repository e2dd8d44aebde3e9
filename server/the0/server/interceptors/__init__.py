"""Server interceptors, outermost first: request id + logging, error mapping, auth."""
