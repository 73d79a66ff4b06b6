"""The Batch API: stored files, batches in the ledger database, shared-prefix grouping, the runner."""
