"""Pure functions on numpy arrays and nibabel images (no Nipype, no pybids)."""
