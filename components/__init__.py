"""Custom Rasa graph components for the co-production companion (the crisis guard)."""
