"""The console: server-rendered pages over the API, the ledger, caches, batches and the scoreboard."""
