"""State on the shared filesystem: completion records, attempts, leases, submission ledger."""
