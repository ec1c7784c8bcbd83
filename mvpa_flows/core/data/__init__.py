"""From BIDS inputs to samples: events to labelled volumes, confounds, cleaning, loading."""
