"""Scaling out: minimill replicas on Ray Serve behind one endpoint, routed by session, cache and prefix."""
