"""Version and citation metadata for mvpa_flows."""

__version__ = "0.1.0"
__packagename__ = "mvpa_flows"
__url__ = "https://github.com/mvpa-flows/mvpa_flows"
__description__ = (
    "Multivariate pattern analysis of fMRIPrep outputs as a BIDS-App and Nipype workflows"
)
