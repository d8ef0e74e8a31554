"""Counterpart's domain: letter terms, rendering, conversion, execution, sealing and audit.

This package never imports Flask or :mod:`web`; it takes and returns plain values.
"""
