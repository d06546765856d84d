"""Distributed SAC."""
