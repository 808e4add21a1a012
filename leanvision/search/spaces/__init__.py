"""Registered search spaces; importing this package registers them."""
