"""Resume texts: rendering with exact spans, tokenization, content-keyed caches."""
