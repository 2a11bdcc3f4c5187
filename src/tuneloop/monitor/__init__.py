"""tuneloop.monitor: drift, behaviour and operations monitoring.

- :mod:`~tuneloop.monitor.drift`: embedding drift between two windows (pure; KS, PSI, MMD,
  domain classifier, centroid, norm, similarity to history) and ``drift_suite``.
- :mod:`~tuneloop.monitor.behaviour`: satisfaction per version and its trend, feedback
  rates, golden-set divergence (pure).
- :mod:`~tuneloop.monitor.operations`: latency percentiles, throughput, error rate,
  retrieval hit rate, window comparison (pure).
- :mod:`~tuneloop.monitor.topics`: complaint topics (k-means + TF-IDF terms).
- :mod:`~tuneloop.monitor.reports`: read the store, write ``drift_reports``, ``latest_drift``.
- :mod:`~tuneloop.monitor.metrics`: Prometheus metrics for ``/metrics``.
- :mod:`~tuneloop.monitor.commands`: ``tuneloop monitor drift|report|list``.
"""
