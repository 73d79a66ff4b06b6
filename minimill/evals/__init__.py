"""Capability suites with exact graders, the runner that puts them to an endpoint, and the scoreboard."""
