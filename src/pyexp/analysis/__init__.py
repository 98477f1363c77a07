"""The analysis side: results on disk as lazy Result objects, filters, getBest, CSV, plots."""
