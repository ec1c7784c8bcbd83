"""The ``mvpa-flows`` BIDS-App and the demo."""
