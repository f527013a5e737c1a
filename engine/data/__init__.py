"""Benchmark source data: which files each benchmark needs, fetching, importing and checking.

- :mod:`engine.data.registry`: each benchmark's files, accepted checksums and sources
  (:data:`~engine.data.registry.REGISTRY`).
- :mod:`engine.data.fetch`: :func:`~engine.data.fetch.pull` from the official sources,
  :func:`~engine.data.fetch.import_mirror` from a local copy, :func:`~engine.data.fetch.status`.
- :mod:`engine.data.paths`: the data directory, ``$RLM_DATA_DIR`` else ``~/.cache/rlm/data``.

::

    from engine.data.fetch import import_mirror, pull
    from engine.data.registry import REGISTRY

    pull(REGISTRY.files(["sniah"]))                       # official sources -> the cache
    import_mirror(REGISTRY.files(), Path("/mnt/mirror"))  # a local copy, verified

``rlm data pull`` and ``rlm data list`` are the command line. The submodules are imported
directly (nothing is re-exported here) so that reading data does not import the HTTP client.
"""
