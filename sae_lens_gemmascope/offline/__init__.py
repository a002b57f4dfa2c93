"""Offline stand-ins: what lets the demo, tutorials and tests run with no hub access.

* :mod:`.sandbox` — one online/offline switch over models and Gemma Scope artifacts;
* :mod:`.realmodel` — the real Gemma 3 270M from PyPI (GGUF, dequantised once);
* :mod:`.synthetic` — files in the exact Gemma Scope on-disk formats, written into a hub-layout cache;
* :mod:`.fitting` — closed-form JumpReLU fits that give synthetic files plausible features;
* :mod:`.tiny` — tiny random Gemma 2 / Gemma 3 models and random SAELens SAEs;
* :mod:`.guards` — context managers that keep a run offline and stop stray package installs.

Nothing here is imported by the runtime loaders; everything here says plainly that its weights are
synthetic.
"""
