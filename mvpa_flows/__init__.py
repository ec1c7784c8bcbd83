"""mvpa_flows: multivariate pattern analysis of fMRI as a BIDS-App and Nipype workflows."""

from mvpa_flows.__about__ import __version__

__all__ = ["__version__"]
