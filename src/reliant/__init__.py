"""reliant: trio-native reliability for LLM provider calls."""
