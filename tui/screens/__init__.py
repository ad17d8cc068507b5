"""Screens of the dynq TUI, one per module."""
