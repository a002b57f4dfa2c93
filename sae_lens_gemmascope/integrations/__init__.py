"""Bridges from Gemma Scope files to neighbouring tools, each behind an optional extra.

* :mod:`sae_lens_gemmascope.integrations.circuit_tracer`: circuit-tracer ``TranscoderSet`` /
  ``CrossLayerTranscoder`` objects for attribution graphs (extra ``circuit-tracer``; install recipe
  in ``docs/circuit_tracer.md``).

Nothing here is imported by ``import sae_lens_gemmascope``; each bridge imports its tool on first use.
"""
