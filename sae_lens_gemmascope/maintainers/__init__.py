"""Maintainers' tooling: build, validate and update the registry. Users never import this.

* :mod:`.compile_index` — ``registry/*.yaml`` -> the compiled JSON index shipped in the package;
* :mod:`.validate` — schema and semantic rules (``gemmascope validate``);
* :mod:`.hubcheck` — compare the registry with hub listings (``gemmascope check-hub``);
* :mod:`.yaml_rt` — comment-preserving YAML write-back (ruamel.yaml round trip);
* :mod:`.coverage` — the README coverage table.
"""
