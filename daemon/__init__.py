"""emag-sync: a faithful PostgreSQL copy of eMAG Marketplace offers and orders."""

__version__ = "0.1.0"
