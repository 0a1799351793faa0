"""Benchmarks that print markdown tables from one run (never run as tests): `make bench`."""
