"""State on the shared filesystem: completion records, attempts, leases and the submission ledger."""
