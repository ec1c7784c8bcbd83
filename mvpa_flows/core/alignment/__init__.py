"""Functional alignment: Procrustes, hyperalignment, transforms and their evaluation."""
