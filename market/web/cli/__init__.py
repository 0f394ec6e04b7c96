"""The `flask market ...` console commands."""
