"""Univariate F-tests and group statistics of subject maps."""
