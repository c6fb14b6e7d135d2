"""Reminders, deletion schedule and holds (dunning issue)."""
