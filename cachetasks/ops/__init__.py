"""Operator tools: the command line, status, health checks, warming, demo data and the metrics exporter."""
