"""Research and training recipes that are not installed with searchkit (run from a checkout)."""
