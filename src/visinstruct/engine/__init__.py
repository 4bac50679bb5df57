"""The generation engine: ledger, rate limits, and the run loop."""
