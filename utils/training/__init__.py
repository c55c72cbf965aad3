"""Training support: distributed set-up, resumable train state, stage chaining, run info."""
