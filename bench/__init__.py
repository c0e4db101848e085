"""`make bench`: throughput, latency and memory of Privacy Plane next to same-run baselines."""
