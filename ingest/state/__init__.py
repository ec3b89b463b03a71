"""What the database remembers about loads: ledger, schema history, drift, quarantine."""
