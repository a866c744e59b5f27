"""Multi-seed study tools: statistics for comparing prompt-selection methods (`stats`)."""
