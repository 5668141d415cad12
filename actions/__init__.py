"""Custom actions of the co-production companion, run by the Rasa action server (rasa_sdk)."""
