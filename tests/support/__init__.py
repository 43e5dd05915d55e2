"""Builders and servers the tests share (tiny datasets, Market-shaped files, a local HTTP server)."""
