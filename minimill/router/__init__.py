"""model="auto" and upstream models: which model answers a request, the cascade, and remote endpoints."""
