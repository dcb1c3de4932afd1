"""Footfall: behavioral analytics and personalization engine."""

__version__ = "0.1.0"
