"""Small reusable networks for the in-repo generator families (no adapter is registered here)."""
