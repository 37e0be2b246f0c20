"""The runtime side: the only package that imports the compiled core
(nasrt._core). Runtime, schedule prediction, profiling the latency table,
timing, the benchmark and its peers. No torch."""
