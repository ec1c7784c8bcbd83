"""Reports: figures, methods text from sidecars, and the HTML assembler driven by a spec.

Sits between ``core`` (numbers) and ``interfaces`` (Nipype nodes that draw the figures
inside the workflows); imports neither Nipype nor pybids.
"""
