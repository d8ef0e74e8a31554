"""Counterpart web front end."""
