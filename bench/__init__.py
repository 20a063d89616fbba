"""The benchmark harness: bailiwick beside nginx and the upstream directly (not part of the product; see README.md)."""
