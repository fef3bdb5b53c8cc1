"""Analyses, export and conversion tools built on the models."""
