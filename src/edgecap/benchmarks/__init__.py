"""Latency, memory, size and report-drift tables of bundles against the Keras model (`edgecap bench`)."""
