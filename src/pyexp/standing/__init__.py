"""Where a sweep stands: missing work, queued and settled jobs, placement, progress, adoption."""
