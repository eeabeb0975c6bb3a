"""The document vault: safe uploads, downloads, sharing and full-text search."""
