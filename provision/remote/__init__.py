"""Code that runs on the managed host (sent over SSH, never imported locally)."""
