"""minimill: a self-hostable, OpenAI-compatible inference server that never computes a token twice."""

__version__ = "0.1.0"
