"""Shared foundations: the one settings object, internal records and the domain error hierarchy."""
