"""Pangolin Gateway: an authentication gateway for Apache Iceberg REST catalogs."""

__version__ = "0.1.0"
