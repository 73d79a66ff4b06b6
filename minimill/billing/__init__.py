"""Money: the price book and its cost model, and the ledger every billable event is written to."""
