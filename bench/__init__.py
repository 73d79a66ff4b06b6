"""Benchmarks: one OpenAI-API client for minimill and every peer, results as same-run ratios."""
