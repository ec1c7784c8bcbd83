"""Thin Nipype interfaces over :mod:`mvpa_flows.core`."""
